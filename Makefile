# dl-rosetta. On a fresh clone:
#   make bench     build what is needed, run every framework's notebooks, write results/README.md
#   make test      build what is needed, run the test suite (CPU only)
#   make test-fast the tests that need no framework environment (no kernels, no real data): a
#                  minute or two on 2 cores, no `rosetta envs`; it builds only the harness's .venv
#   make compare A=pytorch B=jax   two notebooks side by side: results/compare/pytorch-vs-jax-BENCHMARK.html
#   make agree     every framework with 5 seeds on one short run: results/agreement/README.md
#
# Overrides, without editing files:
#   make bench FRAMEWORKS="pytorch" EPOCHS=1 TRAIN_SAMPLES=2000 TEST_SAMPLES=1000
#   make bench FLAVOUR=cpu DEVICE=cpu TIMEOUT=3600 CIFAR10=/path/... IMDB=/path/...
#                  a local copy of each benchmark's data (DATA_VARIABLES; `rosetta data --help`)
#   make bench THREADS=4    CPU threads for every framework (default: every core)
#   make bench RESUME=1     continue an interrupted suite: skip what already has an ok record
#   make bench REPEATS=3    every notebook 3 times (seeds SEED, SEED+1, SEED+2): medians and spread
#   make bench FRAMEWORKS=pytorch VARIANTS="fp32 compiled bf16"   the fp32 rows and two variants (docs/variants.md)
#   make bench NO_WAIT=1    where another suite holds this machine, refuse instead of waiting for it
#   make bench QUIET_WAIT=0 run at once on a busy machine (default: wait up to 60 s for quiet; see README)
#   make bench CLUSTER=auto      every run a task on the Ray cluster this machine is a node of (or
#                  CLUSTER=HOST:6379); ACCELERATOR="H100 A100" a table per GPU type, RETRIES=1 for lost nodes;
#                  installs the optional extra 'cluster' (Ray) into .venv (docs/cluster.md)
#   make test PYTEST_ARGS="-k data"       (make test-fast takes PYTEST_ARGS too)
#
# Frameworks already installed (a vendor container, a cloud image, a conda environment):
#   make bench EXISTING_PYTHON=/opt/venv/bin/python3            that interpreter for every framework
#   make bench EXISTING_PYTHON="pytorch=/a/python jax=/b/python"   one per framework or environment
# Offline machines: gather wheels where an index is reachable, install from them where none is:
#   make wheels WHEELHOUSE=wheels WHEELS_PYTHON=3.12 [WHEELS_SKIP="numpy pandas"] [WHEELS_SPECS=jax-cpu]
#                  (pip download runs in a Python 3.12: found as `rosetta envs` finds one, or
#                  WHEELS_INTERPRETER=/path/python3.12; debugpy and jedi are left out)
#   make bench WHEELHOUSE=wheels [VENV_BASE=/opt/venv/bin/python3]
#   make bundle [BUNDLE=dl-rosetta-bundle.tar] [WHEELS_PYTHON=3.12] [CIFAR10=... IMDB=...]
#                  one archive: the checkout at HEAD with its commit, the wheels, the data copies
#
# On a GPU VM with Docker and the NVIDIA Container Toolkit (see README, "Docker"):
#   make docker [FRAMEWORKS="cntk lasagne"]   build the images dl-rosetta/ENV from docker/ENV/Dockerfile
#   make bench DOCKER=1                        build them, then run every notebook in its image
#   make docker DOCKER_BUILD_ARGS="BASE_IMAGE=nvidia/cuda:..."   (build arguments, space-separated)

PYTHON ?= python3
VENV ?= .venv
VENV_FLAGS ?=
# An interpreter whose packages the harness venv sees too (a .pth file in the venv; nothing is
# written into that interpreter), so that a wheelhouse made with WHEELS_SKIP can leave them out.
VENV_BASE ?=
purelib = $(1) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'
# A folder of wheels (`make wheels`): every install then takes its packages from it, with no index.
WHEELHOUSE ?= $(ROSETTA_WHEELHOUSE)
ifneq ($(strip $(WHEELHOUSE)),)
export ROSETTA_WHEELHOUSE := $(abspath $(WHEELHOUSE))
PIP_SOURCE = --no-index --find-links $(ROSETTA_WHEELHOUSE)
endif
# ipykernel (for the tests' kernels). A wheelhouse made by `make wheels` leaves out debugpy and jedi,
# which ipykernel and IPython require but need not run a notebook, and lists their other
# requirements in kernel-requirements.txt: that list, then the two with --no-deps.
KERNEL_LIST = $(if $(strip $(WHEELHOUSE)),$(wildcard $(ROSETTA_WHEELHOUSE)/kernel-requirements.txt))
install_kernel = $(if $(KERNEL_LIST),$(1) -m pip install $(PIP_SOURCE) -r $(KERNEL_LIST) && \
	$(1) -m pip install $(PIP_SOURCE) --no-deps ipykernel ipython,$(1) -m pip install $(PIP_SOURCE) ipykernel)
# Interpreters that already hold frameworks: PATH, or NAME=PATH entries (see `rosetta envs --help`).
EXISTING_PYTHON ?=
FRAMEWORKS ?=
TEST_FRAMEWORKS ?=

option = $(if $(strip $(2)),$(1) $(strip $(2)))
# The benchmarks' data options (common/benchmarks.py: Benchmark.variable, Benchmark.option): each variable
# set gives its option and its path (the variable is the option in capitals, without the dashes).
DATA_VARIABLES = CIFAR10 IMDB
DATA_FLAGS := $(foreach v,$(DATA_VARIABLES),$(call option,--$(shell echo $(v) | tr A-Z a-z),$($(v))))
RUN_FLAGS = $(call option,--epochs,$(EPOCHS)) $(call option,--train-samples,$(TRAIN_SAMPLES)) \
	$(call option,--test-samples,$(TEST_SAMPLES)) $(call option,--batch-size,$(BATCH_SIZE)) \
	$(call option,--seed,$(SEED)) $(call option,--device,$(DEVICE)) $(call option,--timeout,$(TIMEOUT)) \
	$(call option,--flavour,$(FLAVOUR)) $(call option,--data-dir,$(DATA_DIR)) \
	$(DATA_FLAGS) $(call option,--threads,$(THREADS))
# DOCKER=1 (or yes, true): run the notebooks in the docker images instead of the venvs.
USE_DOCKER = $(filter 1 yes true,$(DOCKER))
RUN_FLAGS += $(if $(USE_DOCKER),--docker)
ENV_FLAGS = $(foreach entry,$(EXISTING_PYTHON),--python $(entry))
# RESUME=1 (or yes, true): skip each run that already has an ok record with the same settings, data and commit.
RUN_FLAGS += $(if $(filter 1 yes true,$(RESUME)),--resume)
RUN_FLAGS += $(call option,--repeats,$(REPEATS))
# CLUSTER=HOST:PORT or auto: the runs on a Ray cluster's nodes (harness/cluster.py, docs/cluster.md).
RUN_FLAGS += $(call option,--cluster,$(CLUSTER)) $(call option,--accelerator,$(ACCELERATOR)) \
	$(call option,--retries,$(RETRIES))
# VARIANTS="fp32 compiled bf16": each variant a run of its own (docs/variants.md); default fp32.
RUN_FLAGS += $(call option,--variant,$(VARIANTS))
# NO_WAIT=1 (or yes, true): one suite at a time per machine (harness/guard.py); where another holds
# it, refuse at once (exit status 2) instead of waiting for it. Also for make onnx, which times prediction.
NO_WAIT_FLAG = $(if $(filter 1 yes true,$(NO_WAIT)),--no-wait)
RUN_FLAGS += $(NO_WAIT_FLAG)
# QUIET_WAIT=SECONDS (0: no wait), QUIET_THRESHOLD=CORES: before each run, wait up to that long for other
# processes to use at most that many cores (harness/quiet.py; default 60 s, 0.25 cores).
RUN_FLAGS += $(call option,--quiet-wait,$(QUIET_WAIT)) $(call option,--quiet-threshold,$(QUIET_THRESHOLD))
# EXPORT=0 (or no, false): leave out the notebooks' export to ONNX and its checks.
RUN_FLAGS += $(if $(filter 0 no false,$(EXPORT)),--no-export)
# EXPORT_BATCH_SIZES="1 8", EXPORT_RUNS=3: the batch sizes and timed runs of each export's prediction
# (default 1 64 1024, 30 runs).
RUN_FLAGS += $(call option,--export-batch-sizes,$(EXPORT_BATCH_SIZES)) $(call option,--export-runs,$(EXPORT_RUNS))

.PHONY: bench smoke test test-fast envs data report list clean openmpi docker wheels bundle compare chromium agree onnx \
	cpu-tables cpu-tables-main cpu-tables-inference cpu-tables-full

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 9))' 2>/dev/null || { \
		echo "dl-rosetta needs Python 3.9 or newer with venv as PYTHON (now: $(PYTHON)); for example: make PYTHON=python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	$(if $(strip $(VENV_BASE)),$(call purelib,$(VENV_BASE)) > "$$($(call purelib,$(VENV)/bin/python))/rosetta_base.pth")
	$(VENV)/bin/python -m pip install $(PIP_SOURCE) --upgrade pip
	$(VENV)/bin/python -m pip install $(PIP_SOURCE) -e '.[harness,test]'
	$(call install_kernel,$(VENV)/bin/python)
	touch $@

# The optional extra 'cluster' (Ray) in the harness's venv: for --cluster, and for the tests of it.
# Best effort (a wheelhouse may lack Ray): without it `--cluster` says how to install it, and the tests
# of the cluster are skipped, saying why.
$(VENV)/.cluster: $(VENV)/.installed pyproject.toml
	@$(VENV)/bin/python -m pip install $(PIP_SOURCE) -e '.[cluster]' && touch $@ || \
	  echo "could not install the optional extra 'cluster' (Ray): --cluster and its tests are unavailable"

bench: $(VENV)/.installed openmpi $(if $(USE_DOCKER),docker) $(if $(strip $(CLUSTER)),$(VENV)/.cluster)
	@# the side-by-side pages are written whatever the runs' outcome; the exit status is the bench's
	status=0; $(VENV)/bin/rosetta bench $(FRAMEWORKS) $(RUN_FLAGS) $(ENV_FLAGS) || status=$$?; \
	$(VENV)/bin/rosetta compare --all --out results/compare; exit $$status

# A quick end-to-end run: one epoch on a few thousand samples.
smoke: $(VENV)/.installed openmpi $(if $(USE_DOCKER),docker) $(if $(strip $(CLUSTER)),$(VENV)/.cluster)
	$(VENV)/bin/rosetta bench $(FRAMEWORKS) --epochs 1 --train-samples 2000 --test-samples 1000 $(RUN_FLAGS) $(ENV_FLAGS)

# CNTK 2.7 loads OpenMPI's libraries: where they are missing and apt-get is there, install
# Debian's/Ubuntu's libopenmpi3 (with sudo unless root). Best effort: without it only CNTK fails.
openmpi:
	@ldconfig -p 2>/dev/null | grep -q 'libmpi_cxx\.so' || { \
	  echo "CNTK needs OpenMPI's libraries: installing libopenmpi3"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  { command -v apt-get >/dev/null && $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq libopenmpi3; } || \
	  echo "could not install libopenmpi3: CNTK will be unavailable until OpenMPI is installed"; }

# The browser test of the side-by-side page drives Debian's chromium headless: where no chromium
# is found and apt-get is there, install it (with sudo unless root). Best effort: without it
# only that test is skipped, saying why.
chromium:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
	  echo "the browser test needs chromium: installing it"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  { command -v apt-get >/dev/null && $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium; } || \
	  echo "could not install chromium: the browser test of the compare page will be skipped"; }

# An environment that cannot be built leaves its framework's tests failing, with the reason.
test: $(VENV)/.installed $(VENV)/.cluster openmpi chromium
	$(VENV)/bin/rosetta envs $(TEST_FRAMEWORKS) --flavour cpu || echo "some environments could not be built (see above)"
	$(VENV)/bin/python tests/rehearsal_image.py || echo "the rehearsal's image could not be built (see above): its tests will fail"
	@$(VENV)/bin/python -m pytest $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests: failing on purpose"; exit 1; fi; exit $$status

# The tests that run no notebook in a framework's kernel and need no real data: nothing is built
# beyond the harness's own venv. The browser test runs where chromium is (`make chromium`).
test-fast: $(VENV)/.installed $(VENV)/.cluster
	@$(VENV)/bin/python -m pytest -m "not kernel and not realdata" $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests: failing on purpose"; exit 1; fi; exit $$status

envs: $(VENV)/.installed openmpi
	$(VENV)/bin/rosetta envs $(FRAMEWORKS) $(call option,--flavour,$(FLAVOUR)) $(ENV_FLAGS)

data: $(VENV)/.installed
	$(VENV)/bin/rosetta data $(call option,--data-dir,$(DATA_DIR)) $(DATA_FLAGS)

report: $(VENV)/.installed
	$(VENV)/bin/rosetta report

# Each latest run's ONNX export checked and timed in ONNX Runtime again (make bench does it after its runs).
onnx: $(VENV)/.installed
	$(VENV)/bin/rosetta onnx $(FRAMEWORKS) $(call option,--flavour,$(FLAVOUR)) $(ENV_FLAGS) $(NO_WAIT_FLAG)

list: $(VENV)/.installed
	$(VENV)/bin/rosetta list

# The committed CPU tables, remade in one sitting on a quiet machine (nothing else running; each part
# can also run alone, in this order): make cpu-tables CIFAR10=PATH IMDB=PATH
#   cpu-tables-main       results/README.md: every framework and benchmark, 3 interleaved repeats of
#                         2 epochs on 4,000 samples (about 70 minutes on 2 cores)
#   cpu-tables-inference  results/inference/: each framework's export run (1 epoch), its ONNX check at once
#                         after it (about 40 minutes)
#   cpu-tables-full       results/full-size/: at full size, one run each, every benchmark whose accuracy the
#                         original comparison published (Benchmark.published; about 60 minutes)
CPU_SUBSET = --device cpu --epochs 2 --train-samples 4000 --test-samples 2000
PUBLISHED = $$($(VENV)/bin/python -c "from common.benchmarks import BENCHMARKS; print(*[b.name for b in BENCHMARKS.values() if b.published])")
cpu-tables: cpu-tables-main cpu-tables-inference cpu-tables-full

cpu-tables-main: envs
	$(VENV)/bin/rosetta bench --repeats 3 $(CPU_SUBSET) --no-export $(DATA_FLAGS)

cpu-tables-inference: envs
	status=0; for name in $$($(VENV)/bin/python -c "from harness.frameworks import FRAMEWORKS; print(*FRAMEWORKS)"); do \
		$(VENV)/bin/rosetta run $$name --device cpu --epochs 1 --train-samples 4000 --test-samples 2000 \
			--results results/inference $(DATA_FLAGS) && \
		$(VENV)/bin/rosetta onnx $$name --results results/inference || status=1; \
	done; exit $$status

cpu-tables-full: envs
	$(VENV)/bin/rosetta bench --benchmark $(PUBLISHED) --device cpu --no-export --results results/full-size $(DATA_FLAGS)

# Every framework once per seed on one short configuration (default: common/benchmarks.py's AGREEMENT,
# on the CPU, 5 seeds): results/agreement/README.md, each mean and range of accuracy beside PyTorch's.
#   make agree [SEEDS=5] [FRAMEWORKS="pytorch mxnet"] [BENCHMARK=NAME] [EPOCHS=.. TRAIN_SAMPLES=.. DEVICE=..]
agree: envs
	$(VENV)/bin/rosetta agree $(FRAMEWORKS) $(call option,--seeds,$(SEEDS)) $(call option,--benchmark,$(BENCHMARK)) \
		$(RUN_FLAGS)

# Two frameworks' notebooks side by side: make compare A=pytorch B=jax [BENCHMARK=NAME] [OUT=dir];
# without A and B, every pair and an index page (results/compare/index.html).
compare: $(VENV)/.installed
	$(VENV)/bin/rosetta compare $(if $(strip $(A)$(B)),$(A) $(B),--all) $(call option,--benchmark,$(BENCHMARK)) \
		$(call option,--out,$(OUT))

# The images need only Docker and a Python 3.9+ (harness.docker uses the standard library).
docker:
	$(PYTHON) -m harness.docker build $(FRAMEWORKS) $(foreach arg,$(DOCKER_BUILD_ARGS),--build-arg $(arg)) $(DOCKER_FLAGS)

# Wheels for an offline machine: the harness, what every kernel needs, keras, jax2onnx (harness/wheels.py),
# downloaded by an interpreter of WHEELS_PYTHON (pip judges markers by its own version): this one,
# WHEELS_INTERPRETER, $ROSETTA_PYTHON312 (for 3.12), python3.12 on the PATH, or pyenv's newest 3.12.x.
WHEELS_PYTHON ?= 3.12
WHEELS_FLAGS = --python-version $(WHEELS_PYTHON) $(call option,--interpreter,$(WHEELS_INTERPRETER)) \
	$(if $(strip $(WHEELS_SKIP)),--skip $(WHEELS_SKIP)) $(if $(strip $(WHEELS_SPECS)),--spec $(WHEELS_SPECS))
wheels:
	@test -n "$(strip $(WHEELHOUSE))" || { echo "make wheels needs WHEELHOUSE=DIR"; exit 1; }
	$(PYTHON) -m harness.wheels $(WHEELHOUSE) $(WHEELS_FLAGS)

# One archive for an offline machine (harness/bundle.py): the checkout at HEAD with a COMMIT file, the
# wheels for WHEELS_PYTHON (gathered into WHEELHOUSE where set, else a temporary folder), and copies of
# each benchmark's data where its variable (DATA_VARIABLES) is set. Uncommitted changes are not included.
BUNDLE ?= dl-rosetta-bundle.tar
bundle:
	$(PYTHON) -m harness.bundle $(BUNDLE) $(WHEELS_FLAGS) $(call option,--wheelhouse,$(WHEELHOUSE)) \
		$(DATA_FLAGS)

clean:
	rm -rf $(VENV) envs
