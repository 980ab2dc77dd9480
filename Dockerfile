# Berth: the portal (web, worker, beat) and the local data plane share this image.
# The data plane runs the Triton Inference Server binary that the nvidia-pytriton wheel
# ships (glibc >= 2.35: Debian bookworm's 2.36 qualifies).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app \
    DJANGO_SETTINGS_MODULE=portal.settings \
    BERTH_VAR_DIR=/var/lib/berth \
    BERTH_STATIC_ROOT=/app/staticfiles

# libgomp1: onnxruntime's OpenMP; the Triton binary and its libraries come inside the wheel.
# bubblewrap: the sandbox Triton (and so every model's code) runs in (toolkit/sandbox.py);
# its setpriv and prlimit come with util-linux, already in the base image.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 bubblewrap \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY portal ./portal
COPY registry ./registry
COPY deployments ./deployments
COPY monitoring ./monitoring
COPY runs ./runs
COPY loadtests ./loadtests
COPY loadgen ./loadgen
COPY dataplane ./dataplane
COPY toolkit ./toolkit
# The Triton binary's wheel goes in without its Python dependencies (scripts/bootstrap says why).
# The gateway's request path is compiled to C (dataplane/native) with a compiler that is
# removed again in the same layer.
RUN pip install . && pip install --no-deps nvidia-pytriton==0.7.0 \
    && apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && python -m dataplane.native \
    && apt-get purge -y --auto-remove gcc libc6-dev && rm -rf /var/lib/apt/lists/*
# Templates, static files and manage.py live next to the packages, not inside them; the
# code runs from /app (PYTHONPATH) so Django finds them.
COPY manage.py ./
COPY templates ./templates
COPY static ./static
# Hashed, compressed static files (WhiteNoise serves them), built once into the image; the
# settings only need placeholder secrets to load here.
RUN DJANGO_SECRET_KEY=collectstatic BERTH_DATAPLANE_ADMIN_TOKEN=collectstatic \
    BERTH_VAR_DIR=/tmp/berth-build python manage.py collectstatic --noinput \
    && rm -rf /tmp/berth-build

# Named volumes mounted here inherit this ownership, so the non-root user can write them.
RUN useradd --create-home --uid 1000 berth \
    && mkdir -p /var/lib/berth /var/lib/berth-dataplane /var/lib/berth-secrets \
        /var/lib/berth-dataplane-token \
    && chown -R berth:berth /var/lib/berth /var/lib/berth-dataplane /var/lib/berth-secrets \
        /var/lib/berth-dataplane-token
USER berth

EXPOSE 8000 8081
CMD ["gunicorn", "portal.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "2", "--threads", "4", "--timeout", "300", "--access-logfile", "-"]
