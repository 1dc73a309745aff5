# rtrl_rl on a CUDA machine.
#
#   docker build -t rtrl_rl .
#   docker run --gpus all --rm -v $PWD/runs:/app/runs rtrl_rl \
#       rtrl-train experiment=atari_r2ac env.game=breakout
#   docker run --rm rtrl_rl make test          # the CPU test suite (no GPU needed)
#
# The base image provides the CUDA runtime only; PyTorch brings its own CUDA libraries
# (cuDNN, cuBLAS) through its wheels. ale-py ships the Atari ROMs; procgen-mirror ships the
# ProcGen binaries; nothing is downloaded at run time.
# Not built in CI (no docker engine there): keep it simple.

FROM nvidia/cuda:12.4.1-runtime-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Python 3.11 (procgen-mirror has wheels for 3.11/3.12) and the libraries ProcGen's Qt
# renderer and ALE link against.
RUN apt-get update && apt-get install -y --no-install-recommends \
        software-properties-common git make \
    && add-apt-repository -y ppa:deadsnakes/ppa \
    && apt-get update && apt-get install -y --no-install-recommends \
        python3.11 python3.11-venv python3.11-dev \
        libgl1 libglib2.0-0 zlib1g \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# The venv lives where the Makefile expects it, so `make test` / `make train` reuse it.
RUN python3.11 -m venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH VIRTUAL_ENV=/app/.venv

# Dependencies first, for layer caching: the default PyPI torch wheel for Linux is the CUDA
# build, which is what this image wants.
COPY pyproject.toml README.md ./
RUN pip install --upgrade pip \
    && pip install "torch>=2.3,<2.14"
COPY rtrl_rl ./rtrl_rl
COPY configs ./configs
COPY scripts ./scripts
COPY tests ./tests
COPY Makefile ./
# Editable install: configs/ are read from the source tree (rtrl_rl/train.py: CONFIG_DIR).
# ProcGen's games without their gym3/gym wrappers, which pin numpy < 2 (see the Makefile).
RUN pip install -e ".[dev,sweep]" \
    && pip install --no-deps "procgen-mirror==0.10.7" \
    && touch .venv/bin/.installed

CMD ["rtrl-train", "--help"]
