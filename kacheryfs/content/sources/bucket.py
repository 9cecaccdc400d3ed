"""An S3-compatible bucket (AWS S3, R2, MinIO, Ceph RGW, SeaweedFS) through boto3.

Layout in the bucket: `<prefix>/sha1/aa/bb/cc/<sha1>`, the storage directory's own; a file with a
manifest carries its hash in the object's metadata (`x-amz-meta-manifest-sha1`) and the manifest
is an object of its own under its hash. boto3 clients are thread-safe; every call here runs in a
worker thread. Credentials come from boto3's standard chain and are never logged.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from kachery_client.uri import check_sha1
from kacheryfs.config import BucketConfig
from kacheryfs.content.sources import RemoteBlob, Sink, SourceError, SourceRefused

log = logging.getLogger(__name__)
BLOCK = 1 << 20
MANIFEST_META = "manifest-sha1"
_REFUSALS = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "NoSuchBucket",
             "InvalidToken", "ExpiredToken", "AuthorizationHeaderMalformed"}


class BucketSource:
    kind = "bucket"

    def __init__(self, config: BucketConfig, channel: str):
        self.config = config
        self.channel = channel
        self.label = f"bucket {config.describe()} (channel {channel})"
        self._client: Any = None

    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config
            session = boto3.session.Session(profile_name=self.config.profile)
            self._client = session.client(
                "s3", endpoint_url=self.config.endpoint_url, region_name=self.config.region,
                config=Config(max_pool_connections=32, retries={"max_attempts": 2, "mode": "standard"},
                              connect_timeout=5, read_timeout=30))
        return self._client

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        """One boto3 call, its errors mapped: missing -> None, refusals -> SourceRefused."""
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
        try:
            return fn(Bucket=self.config.bucket, **kwargs)
        except S3UploadFailedError as e:          # upload_file wraps the ClientError in text
            refused = next((code for code in _REFUSALS if code in str(e)), None)
            if refused:
                raise SourceRefused(f"{self.label} refused {what}: {refused} (check the credentials)") from None
            raise SourceError(f"{self.label}: {what} failed: {e}") from None
        except NoCredentialsError:
            raise SourceRefused(f"{self.label}: no AWS credentials (set AWS_ACCESS_KEY_ID and "
                                "AWS_SECRET_ACCESS_KEY, or a profile)") from None
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchKey", "NotFound"):
                return None
            if code in _REFUSALS:
                hint = " (check the credentials)" if code != "NoSuchBucket" else ""
                raise SourceRefused(f"{self.label} refused {what}: {code}{hint}") from None
            raise SourceError(f"{self.label}: {what} failed: {code or e}") from None
        except BotoCoreError as e:
            raise SourceError(f"{self.label}: {what} failed: {e}") from None

    def stat(self, sha1: str, need_manifest: bool = True) -> RemoteBlob | None:
        head = self._call("HEAD", self.client().head_object, Key=self.config.key_for(check_sha1(sha1)))
        if head is None:
            return None
        manifest = head.get("Metadata", {}).get(MANIFEST_META)
        return RemoteBlob(int(head["ContentLength"]), check_sha1(manifest) if manifest else None)

    def read_range(self, sha1: str, start: int, end: int, sink: Sink) -> None:
        if end <= start:
            return
        obj = self._call("GET", self.client().get_object, Key=self.config.key_for(check_sha1(sha1)),
                         Range=f"bytes={start}-{end - 1}")
        if obj is None:
            raise SourceError(f"{self.label} no longer has sha1://{sha1}")
        got = 0
        try:
            with obj["Body"] as body:
                while got < end - start:
                    block = body.read(min(BLOCK, end - start - got))
                    if not block:
                        break
                    sink(memoryview(block))
                    got += len(block)
        except Exception as e:      # botocore/urllib3 stream errors have no common base
            raise SourceError(f"{self.label}: transfer broke: {e.__class__.__name__}: {e}") from None
        if got != end - start:
            raise SourceError(f"{self.label} sent {got} of {end - start} bytes")

    def upload(self, sha1: str, path: Path, manifest_sha1: str | None = None) -> bool:
        """Put the blob (multipart when large) unless the bucket already has it. True if uploaded."""
        from boto3.s3.transfer import TransferConfig
        size = os.stat(path).st_size
        existing = self.stat(sha1)
        if existing is not None and existing.size == size and (existing.manifest_sha1 or None) == manifest_sha1:
            return False
        extra = {"Metadata": {MANIFEST_META: manifest_sha1}} if manifest_sha1 else {}
        transfer = TransferConfig(multipart_threshold=64 << 20, multipart_chunksize=64 << 20, max_concurrency=4)
        self._call("PUT", lambda Bucket, **kw: self.client().upload_file(
            str(path), Bucket, self.config.key_for(sha1), ExtraArgs=extra, Config=transfer))
        log.info("uploaded sha1://%s (%d bytes) to %s", sha1, size, self.label)
        return True
