"""One file out of an npm package's registry tarball, checked against the registry's
`dist.integrity` (an SRI string) that the caller pins: used by scripts/bootstrap.sh.

    python3 scripts/npm_fetch.py NAME VERSION INTEGRITY PATH_IN_PACKAGE DEST

Writes DEST atomically (a reader never sees half a file). Standard library only: it runs
before the workspace exists.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import sys
import tarfile
import tempfile
import urllib.request

REGISTRY = "https://registry.npmjs.org"


def main(argv: list[str]) -> None:
    name, version, integrity, inner, dest = argv
    url = f"{REGISTRY}/{name}/-/{name.rsplit('/', 1)[-1]}-{version}.tgz"
    with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 - fixed https URL
        tarball = response.read()
    algorithm, _, want = integrity.partition("-")
    got = base64.b64encode(hashlib.new(algorithm, tarball).digest()).decode()
    if got != want:
        sys.exit(f"npm_fetch: {name}@{version}: got {algorithm}-{got}, pinned {integrity}")
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
        member = tar.extractfile(f"package/{inner}")
        if member is None:
            sys.exit(f"npm_fetch: {name}@{version} has no file {inner}")
        content = member.read()
    home = os.path.dirname(os.path.abspath(dest))
    os.makedirs(home, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=home, prefix=".npm_fetch.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(content)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        os.unlink(tmp)
        raise


if __name__ == "__main__":
    if len(sys.argv) != 6:
        sys.exit(__doc__)
    main(sys.argv[1:])
