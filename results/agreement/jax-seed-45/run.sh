set -e
cd /work/main
PM=".venv/bin/papermill --cwd /work/main --log-output --no-progress-bar"
C="-p device cpu -p seed 45"
$PM /tmp/swap/jax_save.ipynb /tmp/swap/out_jax_save.ipynb -k rosetta-jax $C -p save_path /tmp/swap/jax45.npz
$PM /tmp/swap/torch_save.ipynb /tmp/swap/out_torch_save.ipynb -k rosetta-pytorch $C -p save_path /tmp/swap/torch45.npz
D="-p epochs 2 -p train_samples 8000 -p test_samples 2000 -p data_source /work/shared/data/imdb/imdb.npz"
$PM /tmp/swap/torch_load.ipynb /tmp/swap/out_torch_jaxinit.ipynb -k rosetta-pytorch $C $D -p load_path /tmp/swap/jax45.npz
$PM /tmp/swap/jax_load.ipynb /tmp/swap/out_jax_torchinit.ipynb -k rosetta-jax $C $D -p load_path /tmp/swap/torch45.npz
$PM /tmp/swap/torch_load.ipynb /tmp/swap/out_torch_torchinit.ipynb -k rosetta-pytorch $C $D -p load_path /tmp/swap/torch45.npz
$PM /tmp/swap/jax_load.ipynb /tmp/swap/out_jax_jaxinit.ipynb -k rosetta-jax $C $D -p load_path /tmp/swap/jax45.npz
