"""Profile images end to end, on both databases and both image stores (a
directory and S3, served by moto on loopback): chunked uploads of real PNGs
and JPEGs, fetched back over HTTP and compared pixel by pixel; metadata
stripped; bad files refused with nothing stored; no objects left behind by
replacing, deleting or concurrent uploads."""

import concurrent.futures
import io
import pathlib
import secrets
import urllib.error
import urllib.request

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from PIL import ExifTags, Image

from conftest import Server

CHUNK = 64 * 1024


@pytest.fixture(params=["disk", "s3"])
def images(request, backend):
    """A running server and a way to list the objects its image store
    holds."""
    if request.param == "disk":
        server = Server(backend)
        root = pathlib.Path(server.dir.name) / "images"

        def objects():
            return sorted(p.name for p in root.rglob("*") if p.is_file())

    else:
        s3, endpoint, bucket = request.getfixturevalue("moto_s3")
        prefix = "avatars-" + secrets.token_hex(4)
        server = Server(
            backend,
            env={
                "ROSTER_IMAGE_STORE": f"s3://{bucket}/{prefix}",
                "AWS_ENDPOINT_URL": endpoint,
                "AWS_ALLOW_HTTP": "true",
                "AWS_REGION": "us-east-1",
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
            },
        )

        def objects():
            listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix + "/")
            return sorted(o["Key"].rsplit("/", 1)[1] for o in listed.get("Contents", []))

    yield server, objects
    server.stop()


def reason_of(err):
    for detail in rpc_status.from_call(err).details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    return None


def upload(client, users, user_id, data, file_name="avatar.png"):
    def messages():
        yield users.SetProfileImageRequest(
            upload=users.ProfileImageUpload(user_id=user_id, file_name=file_name)
        )
        for i in range(0, len(data), CHUNK):
            yield users.SetProfileImageRequest(chunk=data[i : i + CHUNK])

    return client.SetProfileImage(messages()).user


def fetch(url, headers=None):
    """(status, headers, body) of a GET."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {})) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def gradient(width, height):
    img = Image.new("RGB", (width, height))
    img.putdata([(x * 255 // width, y * 255 // height, 128) for y in range(height) for x in range(width)])
    return img


def encoded(img, fmt, **options):
    out = io.BytesIO()
    img.save(out, fmt, **options)
    return out.getvalue()


def png_chunk_types(data):
    """The types of a PNG's chunks, in order."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    types, at = [], 8
    while at < len(data):
        length = int.from_bytes(data[at : at + 4], "big")
        types.append(data[at + 4 : at + 8])
        at += 12 + length
    return types


def new_user(client, users, **fields):
    fields.setdefault("username", "user-" + secrets.token_hex(4))
    return client.CreateUser(users.CreateUserRequest(**fields)).user


def test_png_and_jpeg_uploads_are_served_with_their_pixels_and_without_metadata(images, stubs):
    server, objects = images
    users, grpc_users = stubs["users"], stubs["users_grpc"]
    with grpc.insecure_channel(server.address) as channel:
        client = grpc_users.UserServiceStub(channel)
        user = new_user(client, users, first_name="Ada", last_name="Lovelace")
        assert not user.has_image
        # Without an image: the default avatar, initials on a colour.
        assert user.image_url == f"http://{server.http_address}/avatars/{user.id}.svg?initials=AL"
        status, headers, body = fetch(user.image_url)
        assert status == 200 and headers["Content-Type"] == "image/svg+xml"
        assert b">AL</text>" in body

        # A PNG with a text chunk, in 64 KiB chunks.
        # Noise, so the file spans several chunks.
        original = Image.frombytes("RGBA", (300, 200), secrets.token_bytes(300 * 200 * 4))
        from PIL import PngImagePlugin

        info = PngImagePlugin.PngInfo()
        info.add_text("Comment", "GPS 52.5200 13.4050")
        png = encoded(original, "PNG", pnginfo=info)
        assert len(png) > CHUNK
        user = upload(client, users, user.id, png)
        assert user.has_image
        assert user.image_url.startswith(f"http://{server.http_address}/images/img_")
        assert user.image_url.endswith(".png")
        assert client.GetUser(users.GetUserRequest(id=user.id)).user.image_url == user.image_url
        status, headers, body = fetch(user.image_url)
        assert status == 200
        assert headers["Content-Type"] == "image/png"
        assert "immutable" in headers["Cache-Control"]
        etag = headers["ETag"]
        assert etag.startswith('"img_')
        assert fetch(user.image_url, {"If-None-Match": etag})[0] == 304
        served = Image.open(io.BytesIO(body))
        assert served.size == (300, 200)
        assert served.convert("RGBA").tobytes() == original.tobytes()
        # Noise compresses to random bytes, which can hold `GPS` by chance:
        # the comment's whole text and every text chunk must be gone.
        assert b"GPS 52.5200 13.4050" in png and b"tEXt" in png_chunk_types(png)
        assert b"GPS 52.5200 13.4050" not in body and "Comment" not in served.info
        assert not {b"tEXt", b"iTXt", b"zTXt", b"eXIf"} & set(png_chunk_types(body))
        png_file = user.image_url.rsplit("/", 1)[1]
        assert objects() == [png_file]

        # A JPEG with EXIF GPS coordinates, named .png: the bytes decide.
        exif = Image.Exif()
        exif[ExifTags.Base.Make] = "Roster Test Camera"
        exif[ExifTags.IFD.GPSInfo] = {
            ExifTags.GPS.GPSLatitudeRef: "N",
            ExifTags.GPS.GPSLatitude: (52.0, 31.0, 12.0),
            ExifTags.GPS.GPSLongitudeRef: "E",
            ExifTags.GPS.GPSLongitude: (13.0, 24.0, 18.0),
        }
        photo = gradient(320, 240)
        jpeg = encoded(photo, "JPEG", quality=95, exif=exif)
        assert Image.open(io.BytesIO(jpeg)).getexif().get_ifd(ExifTags.IFD.GPSInfo)
        user = upload(client, users, user.id, jpeg, file_name="holiday.png")
        assert user.image_url.endswith(".jpg")
        status, headers, body = fetch(user.image_url)
        assert status == 200 and headers["Content-Type"] == "image/jpeg"
        served = Image.open(io.BytesIO(body))
        assert b"Exif" not in body and b"Roster Test Camera" not in body
        assert not served.getexif().get_ifd(ExifTags.IFD.GPSInfo)
        assert len(served.getexif()) == 0
        assert served.size == photo.size
        expected = Image.open(io.BytesIO(jpeg)).convert("RGB").tobytes()
        got = served.convert("RGB").tobytes()
        mean_error = sum(abs(a - b) for a, b in zip(expected, got)) / len(got)
        assert mean_error < 3, mean_error

        # The replaced PNG is gone from the store and from HTTP.
        assert objects() == [user.image_url.rsplit("/", 1)[1]]
        assert fetch(f"http://{server.http_address}/images/{png_file}")[0] == 404

        # Deleting the image leaves no object, and the URL is 404.
        jpeg_url = user.image_url
        user = client.DeleteProfileImage(users.DeleteProfileImageRequest(user_id=user.id)).user
        assert not user.has_image and "/avatars/" in user.image_url
        assert objects() == []
        assert fetch(jpeg_url)[0] == 404


def test_bad_files_are_refused_and_leave_nothing(images, stubs):
    server, objects = images
    users, grpc_users = stubs["users"], stubs["users_grpc"]
    with grpc.insecure_channel(server.address) as channel:
        client = grpc_users.UserServiceStub(channel)
        user = new_user(client, users, first_name="Eve")
        refusals = [
            (b"%PDF-1.7 not an image at all" * 100, "AVATAR_FILE_TYPE_INVALID"),
            (b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', "AVATAR_FILE_TYPE_INVALID"),
            # A real PNG header, then an 11 MB body: refused for its size
            # before it is all read.
            (encoded(gradient(8, 8), "PNG") + secrets.token_bytes(11 * 1000 * 1000), "AVATAR_FILE_SIZE_EXCEEDED"),
        ]
        for data, reason in refusals:
            with pytest.raises(grpc.RpcError) as err:
                upload(client, users, user.id, data)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert reason_of(err.value) == reason
        with pytest.raises(grpc.RpcError) as err:
            upload(client, users, "user_00000000000000000000000000", encoded(gradient(8, 8), "PNG"))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as err:
            client.SetProfileImage(iter([users.SetProfileImageRequest(chunk=b"\x89PNG")]))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert not client.GetUser(users.GetUserRequest(id=user.id)).user.has_image
        assert objects() == []

        # Deleting a user removes their image.
        upload(client, users, user.id, encoded(gradient(16, 16), "GIF"))
        assert len(objects()) == 1
        client.DeleteUser(users.DeleteUserRequest(id=user.id))
        assert objects() == []


def test_concurrent_uploads_leave_exactly_one_image(images, stubs):
    server, objects = images
    users, grpc_users = stubs["users"], stubs["users_grpc"]
    with grpc.insecure_channel(server.address) as channel:
        client = grpc_users.UserServiceStub(channel)
        user = new_user(client, users)
        files = [encoded(gradient(64 + i, 48), "PNG") for i in range(8)]
        with concurrent.futures.ThreadPoolExecutor(len(files)) as pool:
            results = list(pool.map(lambda f: upload(client, users, user.id, f), files))
        assert all(r.has_image for r in results)
        final = client.GetUser(users.GetUserRequest(id=user.id)).user
        assert objects() == [final.image_url.rsplit("/", 1)[1]]
        status, _, body = fetch(final.image_url)
        assert status == 200
        width = Image.open(io.BytesIO(body)).size[0]
        assert final.image_url in {r.image_url for r in results}
        assert width in range(64, 72)
