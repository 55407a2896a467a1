# The image launch/xpk.sh runs on TPU hosts (`--build_image IMAGE` builds and pushes it; or
# `docker build -t IMAGE . && docker push IMAGE`, then `launch/xpk.sh --docker_image IMAGE`):
# this checkout installed with its TPU extra (jax[tpu], libtpu, GCS access), so a workload
# starts training without a pip install on every host. The stage commands name configs by path
# (configs/stage2_finetune.py:...), so they run from /app, where the checkout is copied.
# .dockerignore keeps data/, workdir*/, runs/ and .git out of the image.
#
#   docker build --platform linux/amd64 -t gcr.io/PROJECT/hawk-jax:TAG .
#   docker build --build-arg EXTRAS=tpu,video --build-arg APT_PACKAGES=ffmpeg -t ... .
FROM python:3.11-slim

# tpu: jax[tpu] + libtpu + gcsfs (see setup.py); add e.g. `video` (PyAV, scikit-video) to
# decode videos inside the container.
ARG EXTRAS=tpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# opencv-python-headless and the av wheels bundle the libraries they need (ffmpeg included), so
# the TPU image needs no system packages; scikit-video (EXTRAS=video) calls an ffmpeg binary:
# --build-arg APT_PACKAGES=ffmpeg.
ARG APT_PACKAGES=""
RUN if [ -n "$APT_PACKAGES" ]; then \
      apt-get update \
      && apt-get install -y --no-install-recommends $APT_PACKAGES \
      && rm -rf /var/lib/apt/lists/*; \
    fi

WORKDIR /app

# Dependencies first, from the package metadata alone, so that a code change does not
# reinstall them: setup.py with no packages yet installs just the requirements.
COPY setup.py pyproject.toml ./
RUN pip install ".[${EXTRAS}]" && pip uninstall -y hawk-jax

# Then the checkout itself (not editable: the installed copy is the image's code).
COPY . .
RUN pip install --no-deps . \
    && python -c "import hawk_jax, data_pipelines, configs"

# A non-root user: the workload writes to gs:// (or a mounted volume), not into the image.
RUN useradd --create-home --uid 1000 hawk && chown -R hawk /app
USER hawk

CMD ["python", "-m", "hawk_jax.train", "--help"]
