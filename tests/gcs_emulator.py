"""A local Google Cloud Storage for tests: gcp-storage-emulator on 127.0.0.1, patched so that
tensorstore's gcs kvstore (what Orbax writes its default, OCDBT, checkpoints through) works.

Why the patch. Orbax's OCDBT checkpoints failed against the stock emulator with
`Error reading gs://.../manifest.ocdbt: Malformed StorageGeneration`. The cause: tensorstore
reads object contents as media downloads (`GET .../o/NAME?alt=media`, with or without a Range
header) and takes the object's generation from the response's `x-goog-generation` header
(tensorstore/kvstore/gcs_http/object_metadata.cc `SetObjectMetadataFromHeaders`; only 0-byte
reads ask for the JSON metadata). The emulator's download handler sends no `x-goog-generation`,
so every value tensorstore reads is cached with generation 0. The next time that entry is
revalidated — OCDBT re-reads `manifest.ocdbt` with `ifGenerationNotMatch=<cached>` for every
read newer than the cache, and commits with `ifGenerationMatch=<cached>` — tensorstore's own
argument check (`IsValidStorageGeneration`: a numeric generation must be > 0) rejects the
request before it is sent, hence "Malformed StorageGeneration". A fresh process that reads a
checkpoint once got lucky; a second read, or a save after a read, of the same database failed.

The emulator also ignores the generation preconditions on every request, so an OCDBT commit
(`ifGenerationMatch=0` to create the manifest, `=N` to replace it) could never fail against it.
The patch below, applied in the server process before it serves, adds the metadata headers to
media downloads (x-goog-generation, x-goog-metageneration, x-goog-stored-content-length) and
honours ifGenerationMatch / ifGenerationNotMatch / ifMetagenerationMatch /
ifMetagenerationNotMatch on object GET (304 / 412), uploads and DELETE (412), as GCS does.

Use from tests (registered in tests/conftest.py):

  def test_something(gcs_dir):          # "gs://hawk-jax-test/<test name>-<random>", fresh
    ...
  def test_other(gcs_bucket):           # "gs://hawk-jax-test" (session-wide, shared)
    ...

The first use starts the server for the session and sets, in os.environ (so this process and
every subprocess a test starts see them): STORAGE_EMULATOR_HOST (gcsfs, google-cloud-storage),
TENSORSTORE_GCS_HTTP_URL (tensorstore / Orbax), CLOUD_STORAGE_EMULATOR_ENDPOINT (google-cloud-cpp,
which array_record's reader uses for gs:// files), GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false (else
gcsfs waits on a gRPC bucket lookup the emulator does not serve), FSSPEC_GS_TOKEN=anon (gcsfs
anonymous), GOOGLE_AUTH_TOKEN_FOR_TESTING (tensorstore sends a fixed token instead of probing
for credentials and the GCE metadata server) and NO_GCE_CHECK=true (google-auth). The same
settings are applied in-process to clients that may already have been imported or cached.

Standalone: `python tests/gcs_emulator.py --bucket B [--port P]` prints `PORT <n>` and serves
until interrupted.
"""
from __future__ import annotations

import argparse
import os
import re
import select
import subprocess
import sys
import tempfile
import threading
import uuid
from http import HTTPStatus

import pytest

BUCKET = "hawk-jax-test"
HOST = "127.0.0.1"
START_TIMEOUT_S = 120  # a generous bound on the server's start (imports on a busy machine)

# ---------------------------------------------------------------------------------------------
# Server side: runs in the emulator's process.


def _object_or_none(storage, bucket: str, name: str | None):
  from gcp_storage_emulator.exceptions import NotFound
  if not name:
    return None
  try:
    return storage.get_file_obj(bucket, name)
  except NotFound:
    return None


def _precondition_status(query, obj, read: bool) -> HTTPStatus | None:
  """The status GCS answers when a request's generation preconditions do not hold, else None.

  A missing object has generation 0 (so `ifGenerationMatch=0` means "only if absent"). A failed
  `*NotMatch` on a read is 304 Not Modified (tensorstore keeps its cached value), else 412."""
  generation = int(obj["generation"]) if obj else 0
  metageneration = int(obj["metageneration"]) if obj else None

  def arg(name):
    return int(query[name][0]) if name in query else None

  if arg("ifGenerationMatch") is not None and arg("ifGenerationMatch") != generation:
    return HTTPStatus.PRECONDITION_FAILED
  if arg("ifMetagenerationMatch") is not None and arg("ifMetagenerationMatch") != metageneration:
    return HTTPStatus.PRECONDITION_FAILED
  unchanged = HTTPStatus.NOT_MODIFIED if read else HTTPStatus.PRECONDITION_FAILED
  if arg("ifGenerationNotMatch") is not None and arg("ifGenerationNotMatch") == generation:
    return unchanged
  if (arg("ifMetagenerationNotMatch") is not None
      and arg("ifMetagenerationNotMatch") == metageneration):
    return unchanged
  return None


def _refuse(response, status: HTTPStatus) -> None:
  response.status = status
  if status == HTTPStatus.PRECONDITION_FAILED:
    message = "At least one of the pre-conditions you specified did not hold."
    response.json({"error": {"code": 412, "message": message, "errors": [
        {"domain": "global", "reason": "conditionNotMet", "message": message}]}})


def _upload_name(request) -> str | None:
  if "name" in request.query:
    return request.query["name"][0]
  data = request.data
  if isinstance(data, dict):  # multipart: {"meta": {...}, "content": ...}; resumable: {...}
    return (data.get("meta") if "meta" in data else data).get("name")
  return None


def patch_emulator() -> None:
  """Replace the emulator's object download / get / upload / delete handlers with the GCS
  behaviour tensorstore relies on (see the module docstring)."""
  from gcp_storage_emulator import server
  from gcp_storage_emulator.handlers import objects

  original = dict(download=objects.download, get=objects.get, insert=objects.insert,
                  delete=objects.delete)

  def download(request, response, storage, *args, **kwargs):
    bucket, name = request.params["bucket_name"], request.params["object_id"]
    obj = _object_or_none(storage, bucket, name)
    status = _precondition_status(request.query, obj, read=True) if obj else None
    if status:
      return _refuse(response, status)
    original["download"](request, response, storage)
    if obj and response.status in (HTTPStatus.OK, HTTPStatus.PARTIAL_CONTENT):
      response["x-goog-generation"] = str(obj["generation"])
      response["x-goog-metageneration"] = str(obj["metageneration"])
      response["x-goog-stored-content-length"] = str(obj["size"])
      response["x-goog-stored-content-encoding"] = "identity"

  def get(request, response, storage, *args, **kwargs):
    if request.query.get("alt", [""])[0] == "media":
      return download(request, response, storage)
    obj = _object_or_none(storage, request.params["bucket_name"], request.params["object_id"])
    status = _precondition_status(request.query, obj, read=True) if obj else None
    if status:
      return _refuse(response, status)
    return original["get"](request, response, storage)

  def insert(request, response, storage, *args, **kwargs):
    if "upload_id" not in request.query:  # a resumable upload's later chunks: checked at start
      obj = _object_or_none(storage, request.params["bucket_name"], _upload_name(request))
      status = _precondition_status(request.query, obj, read=False)
      if status:
        return _refuse(response, status)
    return original["insert"](request, response, storage)

  def delete(request, response, storage, *args, **kwargs):
    obj = _object_or_none(storage, request.params["bucket_name"], request.params["object_id"])
    status = _precondition_status(request.query, obj, read=False) if obj else None
    if status:
      return _refuse(response, status)
    return original["delete"](request, response, storage)

  replaced = {original[k]: v for k, v in
              dict(download=download, get=get, insert=insert, delete=delete).items()}
  found = set()
  for _, handlers in server.HANDLERS:
    for method, handler in list(handlers.items()):
      if handler in replaced:
        handlers[method] = replaced[handler]
        found.add(handler)
  if found != set(replaced):  # another emulator layout: fail here, not with a tensorstore error
    raise RuntimeError("gcp-storage-emulator's routing table changed; update patch_emulator()")
  objects.download, objects.get = download, get  # `get` and others call these by name


def serve(bucket: str, port: int = 0, until_stdin_closes: bool = False) -> None:
  """Start the patched emulator (in memory, `bucket` created), print `PORT <n>`, serve."""
  import logging

  from gcp_storage_emulator.server import create_server

  logging.basicConfig(level=logging.ERROR)
  patch_emulator()
  srv = create_server(HOST, port, in_memory=True, default_bucket=bucket)
  srv.start()
  print(f"PORT {srv._api._httpd.server_address[1]}", flush=True)
  if until_stdin_closes:  # the test process holds our stdin: when it dies, so do we
    sys.stdin.read()
    os._exit(0)
  threading.Event().wait()


# ---------------------------------------------------------------------------------------------
# Client side: the test process.


class GcsEmulator:
  """The patched emulator in a subprocess on a free 127.0.0.1 port, with one bucket."""

  def __init__(self, bucket: str = BUCKET):
    self.bucket = bucket
    self.proc = None
    self.url = None
    self._log = None

  def start(self) -> "GcsEmulator":
    self._log = tempfile.NamedTemporaryFile("w+", prefix="gcs_emulator_", suffix=".log")
    self.proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--bucket", self.bucket,
         "--until_stdin_closes"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True)
    ready, _, _ = select.select([self.proc.stdout], [], [], START_TIMEOUT_S)
    line = self.proc.stdout.readline() if ready else ""  # "" also when the process failed
    match = re.fullmatch(r"PORT (\d+)\n", line)
    if not match:
      self.stop()
      self._log.seek(0)
      raise RuntimeError(f"the GCS emulator did not start: {line!r}\n{self._log.read()[-4000:]}")
    self.url = f"http://{HOST}:{match.group(1)}"
    return self

  def stop(self) -> None:
    if self.proc is not None and self.proc.poll() is None:
      self.proc.stdin.close()
      try:
        self.proc.wait(timeout=10)
      except subprocess.TimeoutExpired:
        self.proc.kill()
        self.proc.wait()
    if self._log is not None:
      self._log.close()


def client_environment(url: str) -> dict[str, str]:
  """What points gcsfs, google-cloud-storage and tensorstore at `url`, anonymously."""
  return {
      "STORAGE_EMULATOR_HOST": url,
      "TENSORSTORE_GCS_HTTP_URL": url,
      "CLOUD_STORAGE_EMULATOR_ENDPOINT": url,
      "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
      "FSSPEC_GS_TOKEN": "anon",
      "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",
      "NO_GCE_CHECK": "true",
  }


def use_emulator(url: str) -> dict[str, str | None]:
  """Point this process (and its future subprocesses) at `url`. Returns the previous values of
  the environment variables it set.

  Environment variables reach subprocesses and anything that reads them late (tensorstore reads
  TENSORSTORE_GCS_HTTP_URL at every open). Clients that read them once are fixed up here: fsspec
  reads FSSPEC_* at import, gcsfs picks its class from GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT at
  import, and etils.epath and fsspec cache filesystem instances."""
  env = client_environment(url)
  previous = {k: os.environ.get(k) for k in env}
  os.environ.update(env)

  import fsspec
  import gcsfs
  import gcsfs.core
  fsspec.config.conf.setdefault("gs", {})["token"] = "anon"
  if gcsfs.GCSFileSystem is not gcsfs.core.GCSFileSystem:  # imported before, with HNS support
    gcsfs.GCSFileSystem = gcsfs.core.GCSFileSystem
  for protocol in ("gs", "gcs"):
    fsspec.register_implementation(protocol, gcsfs.core.GCSFileSystem, clobber=True)
  gcsfs.core.GCSFileSystem.clear_instance_cache()
  from etils.epath import backend
  backend._FileSystemSpecBackend._get_filesystem.cache_clear()
  return previous


@pytest.fixture(scope="session")
def gcs_bucket():
  """"gs://hawk-jax-test" on a local emulator, for the whole session; every GCS client in this
  process and its subprocesses points there. Tests write under their own prefix (`gcs_dir`)."""
  emulator = GcsEmulator().start()
  previous = use_emulator(emulator.url)
  try:
    yield f"gs://{emulator.bucket}"
  finally:
    emulator.stop()
    for key, value in previous.items():
      if value is None:
        os.environ.pop(key, None)
      else:
        os.environ[key] = value


@pytest.fixture
def gcs_dir(gcs_bucket, request) -> str:
  """A fresh prefix for one test: gs://hawk-jax-test/<test name>-<random>."""
  name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:80]
  return f"{gcs_bucket}/{name}-{uuid.uuid4().hex[:8]}"


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--bucket", default=BUCKET)
  parser.add_argument("--port", type=int, default=0, help="0: a free port")
  parser.add_argument("--until_stdin_closes", action="store_true",
                      help="exit when stdin closes (the parent test process died or is done)")
  args = parser.parse_args(argv)
  serve(args.bucket, args.port, args.until_stdin_closes)


if __name__ == "__main__":
  main()
