# The image of jobs/rayjob.yaml (and of any Ray cluster that runs factory): Ray's GPU image with this
# repository at /opt/factory, installed (not editable) with its vllm and s3 extras.
#
#   docker build -t REGISTRY/factory:0.1.0 .        # the tag is pyproject's version; push, then name it
#   docker push REGISTRY/factory:0.1.0              # in jobs/rayjob.yaml (every container: one image)
#
# The build needs the package registries only (the base image and pip). Ray stays the base image's
# (RAY_VERSION = the RayJob's rayVersion): pip is held to it, so the cluster's Ray is the image's. vLLM comes
# at the range the extra pins in pyproject.toml (the range the vllm test tier runs).
ARG RAY_VERSION=2.60.0
FROM rayproject/ray:${RAY_VERSION}-py311-gpu
ARG RAY_VERSION

USER root
RUN mkdir -p /opt/factory && chown ray:users /opt/factory
USER ray
WORKDIR /opt/factory

# The package first (its layer is rebuilt only when the code or its dependencies change).
COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users factory ./factory
RUN pip install --no-cache-dir ".[vllm,s3]" "ray[default]==${RAY_VERSION}" \
    && python -c "import factory, vllm; print('factory', factory.__version__, 'vllm', vllm.__version__)"

# The configs the entrypoints name (conf/rubrics and conf/data/calibration.jsonl link into factory/data/).
COPY --chown=ray:users conf ./conf
COPY --chown=ray:users jobs ./jobs
