"""A thin boto3 helper for user data: voices in, results out. It never touches models.

Works with AWS S3 and S3-compatible stores (R2, B2, MinIO) through S3_ENDPOINT_URL. Transient
faults (5xx, throttling, dropped connections) are retried by botocore with backoff; what still
fails becomes a StorageError with a message free of credentials and signed URLs.
"""

from __future__ import annotations

import logging
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from config import Settings
from errors import LimitExceeded, StorageError, preview

log = logging.getLogger("f5worker.s3")


def _missing(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound")


class S3Storage:
    def __init__(self, settings: Settings):
        self.bucket = settings.s3_bucket
        options = dict(
            retries={"total_max_attempts": settings.s3_max_attempts, "mode": "standard"},
            connect_timeout=settings.s3_connect_timeout,
            read_timeout=settings.s3_read_timeout,
            signature_version="s3v4",
        )
        if settings.s3_endpoint_url:
            # Many S3-compatible stores reject boto3's default request checksums and want
            # path-style addressing.
            options.update(
                s3={"addressing_style": "path"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            )
        self.client = boto3.session.Session().client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.s3_region,
            aws_access_key_id=settings.s3_access_key_id,
            aws_secret_access_key=settings.s3_secret_access_key,
            config=Config(**options),
        )

    def _fail(self, action: str, key: str, exc: Exception) -> StorageError:
        code = exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else type(exc).__name__
        log.warning("S3 %s of s3://%s/%s failed: %s", action, self.bucket, preview(key), code)
        return StorageError(f"S3 {action} of '{preview(key)}' failed ({code or 'error'}).")

    def exists(self, key: str) -> bool:
        return self.head(key) is not None

    def head(self, key: str) -> str | None:
        """The object's ETag now (one HEAD), or None when there is none."""
        try:
            return self.client.head_object(Bucket=self.bucket, Key=key)["ETag"].strip('"')
        except ClientError as exc:
            if _missing(exc):
                return None
            raise self._fail("lookup", key, exc) from None
        except BotoCoreError as exc:
            raise self._fail("lookup", key, exc) from None

    def download(self, key: str, path: Path, max_bytes: int) -> str:
        """Stream an object to `path`, refusing objects over `max_bytes`; returns the ETag of
        what was read (the object may have been replaced since it was looked up)."""
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=key)
            size = obj["ContentLength"]
            if size > max_bytes:
                obj["Body"].close()
                raise LimitExceeded(f"'{preview(key)}' is {size} bytes; at most {max_bytes} bytes are accepted.")
            written = 0
            with open(path, "wb") as fh:
                for block in obj["Body"].iter_chunks(1 << 20):
                    written += len(block)
                    if written > max_bytes:
                        raise LimitExceeded(f"'{preview(key)}' is over {max_bytes} bytes.")
                    fh.write(block)
            return obj["ETag"].strip('"')
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("download", key, exc) from None

    def read_text(self, key: str, max_bytes: int = 64 * 1024) -> tuple[str, dict] | None:
        """A small text object and its user metadata, or None when there is none."""
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=key)
            data = obj["Body"].read(max_bytes + 1)
        except ClientError as exc:
            if _missing(exc):
                return None
            raise self._fail("download", key, exc) from None
        except BotoCoreError as exc:
            raise self._fail("download", key, exc) from None
        if len(data) > max_bytes:
            raise LimitExceeded(f"'{preview(key)}' is over {max_bytes} bytes.")
        return data.decode("utf-8", errors="replace"), obj.get("Metadata", {})

    def write_text(self, key: str, text: str, metadata: dict | None = None) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=text.encode("utf-8"),
                                   ContentType="text/plain; charset=utf-8", Metadata=metadata or {})
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("upload", key, exc) from None

    def upload(self, path: Path, key: str, content_type: str, metadata: dict | None = None) -> None:
        # One PUT (results are a few MB at most): S3 stores the object whole or not at all,
        # so a failed upload never leaves a partial result under the output prefix.
        try:
            with open(path, "rb") as fh:
                self.client.put_object(Bucket=self.bucket, Key=key, Body=fh, ContentType=content_type,
                                       Metadata=metadata or {})
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("upload", key, exc) from None

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("deletion", key, exc) from None

    def listing(self, prefix: str) -> list[tuple[str, float]]:
        """(key, last modified as a Unix time) of every object under `prefix`."""
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
            return [(o["Key"], o["LastModified"].timestamp()) for page in pages for o in page.get("Contents", [])]
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("listing", prefix, exc) from None

    def presign(self, key: str, expires: int) -> str:
        try:
            return self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires
            )
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("presign", key, exc) from None
