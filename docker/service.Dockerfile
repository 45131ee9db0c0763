# The hotline service: FastAGI, AMI client, HTTP API, recording analysis.
FROM python:3.11-slim-bookworm
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends espeak-ng sox \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY cti cti
COPY ivr ivr
COPY recordings recordings
COPY dialplans dialplans
COPY hotline hotline
RUN pip install --no-cache-dir '.[postgres]'
ENV HOTLINE_DATA_DIR=/var/lib/hotline/data \
    HOTLINE_HTTP_HOST=0.0.0.0 \
    HOTLINE_AGI_HOST=0.0.0.0 \
    HOTLINE_RECORDINGS_DIR=/var/spool/asterisk/monitor
EXPOSE 8080 4573
CMD ["hotline", "serve"]
