import copy, json, sys
import nbformat
def cells(path):
    nb = nbformat.read(path, as_version=4)
    return nb, {t: c for c in nb.cells if c.cell_type == 'code' for t in c.metadata.get('tags', []) if t.startswith('step:')}
def build(path, out, order, extra):
    nb, by = cells(path)
    new = copy.deepcopy(nb); new.cells = []
    for step in order:
        if step in extra: new.cells.append(nbformat.v4.new_code_cell(extra[step]))
        else: new.cells.append(copy.deepcopy(by['step:' + step]))
    nbformat.write(new, out)
SAVE = lambda tree: {'save': f"np.savez(save_path, **canonical_weights({tree}))" if tree else "np.savez(save_path, **canonical_weights())"}
# save the initial weights of a seed
build('/work/main/notebooks/imdb/JAX_IMDB.ipynb', '/tmp/swap/jax_save.ipynb',
      ['parameters', 'imports', 'environment', 'model', 'optimiser', 'parity', 'save'], SAVE('initial_weights'))
build('/work/main/notebooks/imdb/PyTorch_IMDB.ipynb', '/tmp/swap/torch_save.ipynb',
      ['parameters', 'imports', 'environment', 'model', 'optimiser', 'parity', 'save'], SAVE(None))
# train from loaded weights
TORCH_LOAD = """weights = dict(np.load(load_path))
with torch.no_grad():
    for name, (variable, conversion) in canonical_layout.items():
        variable.copy_(torch.from_numpy(conversion.to_framework(weights[name])))"""
JAX_LOAD = """weights = dict(np.load(load_path))
loaded = traverse_util.unflatten_dict({variable: jnp.asarray(conversion.to_framework(weights[name]))
                                       for name, (variable, conversion) in canonical_layout.items()})
state = train_state.TrainState.create(apply_fn=model.apply, params=loaded, tx=optimizer)"""
order = ['parameters', 'imports', 'environment', 'data', 'model', 'optimiser', 'parity', 'load', 'train', 'predict', 'evaluate']
build('/work/main/notebooks/imdb/PyTorch_IMDB.ipynb', '/tmp/swap/torch_load.ipynb', order, {'load': TORCH_LOAD})
build('/work/main/notebooks/imdb/JAX_IMDB.ipynb', '/tmp/swap/jax_load.ipynb', order, {'load': JAX_LOAD})
