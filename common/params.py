"""The shared definitions of docs/design.md, as plain values. Change them here only.

Every notebook reads its defaults from here; papermill can override the run
size (epochs, sample counts, seed) but a run whose values differ from these is
marked as such in its record.
"""

SEED = 42

# CNN on CIFAR-10 (VGG-style, 32x32x3 in, 10 classes out).
CNN_CHANNELS = (50, 100)          # two conv3x3 blocks of two layers each
CNN_DENSE = 512
CNN_DROPOUT = (0.25, 0.25, 0.5)   # after block 1, after block 2, after dense
CNN_CLASSES = 10
CNN_LR = 0.01
CNN_MOMENTUM = 0.9
CNN_BATCH = 64
CNN_EPOCHS = 10
CNN_PARAMETERS = 3_441_592

# GRU on IMDB (sentiment, 2 classes).
IMDB_VOCAB = 30_000               # 0 padding, 1 start, 2 out-of-vocabulary, words from 3
IMDB_SEQ_LEN = 150                # last 150 tokens, left-aligned, zero-padded on the right
IMDB_START, IMDB_OOV, IMDB_INDEX_FROM = 1, 2, 3
IMDB_SHUFFLE_SEED = 113           # Keras' load_data shuffle
GRU_EMBEDDING = 125
GRU_HIDDEN = 100
GRU_CLASSES = 2
GRU_LR = 0.001
GRU_BETAS = (0.9, 0.999)
GRU_EPSILON = 1e-8
GRU_BATCH = 64
GRU_EPOCHS = 3
GRU_PARAMETERS = 3_818_302

CIFAR_TRAIN, CIFAR_TEST = 50_000, 10_000
IMDB_TRAIN, IMDB_TEST = 25_000, 25_000
