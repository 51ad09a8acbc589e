# The spendstream image: the pipeline with both ClickHouse backends.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY spendstream ./spendstream
RUN pip install --no-cache-dir '.[all]'
RUN useradd --create-home spendstream
USER spendstream
ENV SPENDSTREAM_DATA_DIR=/home/spendstream/data
ENTRYPOINT ["spendstream"]
CMD ["worker"]
