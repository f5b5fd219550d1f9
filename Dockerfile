# MEDCARE Screen: the HTTP service under gunicorn. Multi-stage: build a virtualenv, copy it
# into a slim runtime image that runs as a non-root user.
#   docker build -t medcare-screen .
#   docker run -p 8000:8000 -e MEDCARE_API_TOKEN_SHA256=<sha256 of your token> \
#     -e MEDCARE_FHIR_BASE_URL=https://fhir.example.org/r4 -v medcare-data:/data medcare-screen

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
RUN pip install --upgrade pip && pip install .

FROM python:3.11-slim AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MEDCARE_MAPPINGS_DIR=/app/mappings \
    MEDCARE_SOURCE_PATH=/app/fixtures/patients \
    MEDCARE_DATABASE_URL=sqlite:////data/medcare.sqlite3
RUN groupadd --system medcare && useradd --system --gid medcare --home-dir /app --shell /usr/sbin/nologin medcare \
    && mkdir -p /data /app && chown medcare:medcare /data && chmod 0700 /data
COPY --from=build /opt/venv /opt/venv
COPY --chown=medcare:medcare mappings /app/mappings
COPY --chown=medcare:medcare fixtures/patients /app/fixtures/patients
COPY --chown=medcare:medcare profiles /app/profiles
WORKDIR /app
USER medcare
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/health/live', timeout=4).status == 200 else 1)"
CMD ["medcare-screen", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2", "--threads", "8"]
