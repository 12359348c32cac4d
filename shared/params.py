"""Every audio and model constant, in one place (after vggish_params.py / yamnet params.py)."""

SAMPLE_RATE = 16000
# int16 PCM (the pipeline's chunks) stands for sample / PCM_FULL_SCALE in [-1, 1).
PCM_FULL_SCALE = 32768.0

# Short-time Fourier transform: 25 ms periodic Hann window, 10 ms hop, FFT of 512 points.
STFT_WINDOW_SECONDS = 0.025
STFT_HOP_SECONDS = 0.010
STFT_WINDOW_SAMPLES = round(SAMPLE_RATE * STFT_WINDOW_SECONDS)  # 400
STFT_HOP_SAMPLES = round(SAMPLE_RATE * STFT_HOP_SECONDS)  # 160
FFT_LENGTH = 512

# Mel filterbank: 64 HTK mel bands between 125 Hz and 7500 Hz.
MEL_BANDS = 64
MEL_MIN_HZ = 125.0
MEL_MAX_HZ = 7500.0

# log(mel + offset): the two models were trained with different offsets.
VGGISH_LOG_OFFSET = 0.01
YAMNET_LOG_OFFSET = 0.001

# One model input ("patch") is 96 frames of 10 ms; its waveform spans 0.975 s because the last
# frame needs a whole window: (96 - 1) * 160 + 400 = 15600 samples.
PATCH_FRAMES = 96
PATCH_SAMPLES = (PATCH_FRAMES - 1) * STFT_HOP_SAMPLES + STFT_WINDOW_SAMPLES  # 15600
PATCH_SECONDS = PATCH_SAMPLES / SAMPLE_RATE  # 0.975

# Classification slides patches every 0.48 s (YAMNet's default; 48 frames). The AudioSet
# release (and so VGGish and heads trained on its features) has one patch every 0.96 s.
DEFAULT_PATCH_HOP_SECONDS = 0.48
RELEASE_PATCH_HOP_SECONDS = PATCH_FRAMES * STFT_HOP_SECONDS  # 0.96

# Embedding sizes.
VGGISH_EMBEDDING_SIZE = 128
YAMNET_EMBEDDING_SIZE = 1024

# VGGish network (after vggish_params.py): weights start as N(0, 0.01) truncated, biases at 0;
# inference runs this many patches through the network at a time (bounds memory).
VGGISH_INIT_STDDEV = 0.01
VGGISH_BATCH_SIZE = 64

# AudioSet release quantisation of (PCA-whitened) VGGish embeddings: clip to [-2, 2], 8 bits.
QUANTIZE_MIN_VALUE = -2.0
QUANTIZE_MAX_VALUE = 2.0
QUANTIZE_LEVELS = 256
