import pytest

from kachery_client.errors import InvalidHashError, InvalidURIError, UsageError
from kachery_client.uri import (
    ChunkOf,
    FileURI,
    format_feed_uri,
    format_file_uri,
    parse_feed_uri,
    parse_file_uri,
)

H = "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d"
M = "c69526c2a4f03e6de9df601a6b4d7e7f85f994ef"


def test_valid_forms():
    assert parse_file_uri(f"sha1://{H}/file.txt") == FileURI(H, "file.txt")
    assert parse_file_uri(f"sha1://{H}") == FileURI(H, "")
    assert parse_file_uri(f"sha1://{H.upper()}/a").sha1 == H
    assert parse_file_uri(f"sha1://{H}.json").sha1 == H          # tolerated, as the original
    u = parse_file_uri(f"sha1://{H}/dir/rec.bin?manifest={M}&label=x")
    assert (u.name, u.basename, u.manifest_sha1) == ("dir/rec.bin", "rec.bin", M)
    c = parse_file_uri(f"sha1://{H}?chunkOf={M}~0~20000000").chunk_of
    assert c == ChunkOf(M, 0, 20000000)
    assert str(parse_file_uri(f"sha1://{H}/x.txt?manifest={M}")) == f"sha1://{H}/x.txt?manifest={M}"
    assert format_file_uri(H, "file.txt") == f"sha1://{H}/file.txt"


BAD = [
    "", "hello", "/tmp/file", "http://example.org/x", "md5://abc/x", "SHA1://" + H, "sha1:/" + H,
    "sha1://", "sha1:///file.txt", "sha1://abc/file.txt", "sha1://" + H[:-1] + "/x",
    "sha1://" + H + "0/x", "sha1://" + "g" * 40 + "/x", "sha1://" + H[:20] + "-" + H[21:],
    "sha1://" + H + "/../etc/passwd", "sha1://" + H + "/a/../../b", "sha1://" + H + "//etc/passwd",
    "sha1://" + H + "/./x", "sha1://" + H + "/a\\..\\b", "sha1://" + H + "/x\x00y", "sha1://" + H + "/x/",
    "sha1://" + H + "/..", "sha1://" + H + "?manifest=xyz", "sha1://" + H + "?chunkOf=" + M + "~1",
    "sha1://" + H + "?chunkOf=" + M + "~a~b", "sha1://" + H + "?chunkOf=" + M + "~9~3",
    "sha1://" + H + "/" + "n" * 300, "sha1://" + "a" * 10000,
]


@pytest.mark.parametrize("uri", BAD)
def test_malformed_uris_give_clear_errors(uri):
    with pytest.raises(UsageError) as e:
        parse_file_uri(uri)
    assert isinstance(e.value, (InvalidURIError, InvalidHashError))
    message = str(e.value)
    assert message and "\n" not in message and len(message) < 10_300


def test_not_a_string():
    with pytest.raises(InvalidURIError):
        parse_file_uri(None)  # type: ignore[arg-type]


def test_feed_uris():
    fid = "ab" * 32
    assert parse_feed_uri(fid).feed_id == fid
    assert parse_feed_uri(f"feed://{fid}/a%20b/c").subfeed_name == "a b/c"
    assert format_feed_uri(fid, "a b/c") == f"feed://{fid}/a%20b/c"
    for bad in ("feed://xyz", "sha1://" + H, ""):
        with pytest.raises(InvalidURIError):
            parse_feed_uri(bad)
