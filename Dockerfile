# rnri's editor (app.py) on an NVIDIA GPU or on the CPU, as user 1000, on port 7860.
#   docker build -t rnri .
#   docker run --gpus all -p 7860:7860 -v rnri-cache:/home/user/.cache/huggingface rnri
# Without --gpus the same image runs on the CPU (slowly). docs/deploy.md has the rest.
FROM python:3.11-slim

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Dependencies first (their layer is rebuilt only when requirements.txt changes). torch comes first, at the version
# requirements.txt pins: from PyPI, whose Linux wheels carry CUDA and also run on the CPU, or from TORCH_INDEX_URL
# (e.g. https://download.pytorch.org/whl/cpu for a much smaller CPU-only image).
ARG TORCH_INDEX_URL=""
COPY requirements.txt /tmp/requirements.txt
RUN grep -E '^torch==' /tmp/requirements.txt > /tmp/torch.txt \
    && pip install --no-cache-dir ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} -r /tmp/torch.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt /tmp/torch.txt

RUN useradd --create-home --uid 1000 user
USER 1000
ENV HOME=/home/user \
    HF_HOME=/home/user/.cache/huggingface \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860
# Made by user 1000, so both are theirs. The model cache (about 2 GB, fetched on the first start) lives on a volume,
# so a new container does not download it again.
RUN mkdir -p "$HF_HOME" /home/user/app
VOLUME ["/home/user/.cache/huggingface"]

WORKDIR /home/user/app
COPY --chown=1000:1000 . .

EXPOSE 7860
# The first start downloads the model: give it 10 minutes before failed checks count.
HEALTHCHECK --interval=30s --timeout=10s --start-period=600s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7860/', timeout=8)"]
CMD ["python", "app.py"]
