FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY controller controller
COPY devices devices
COPY audio audio
COPY firmware-sim firmware-sim
RUN pip install --no-cache-dir .
ENV LOA_DATA_DIR=/data
VOLUME /data
EXPOSE 8000
CMD ["loa", "serve", "--host", "0.0.0.0", "--port", "8000"]
