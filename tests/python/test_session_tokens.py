"""A session token from the real binary (RS256, its signing key made on
first start and kept in the database) verifies with PyJWT against the JWKS
fetched over HTTP, as any third-party service would verify it."""

import json
import urllib.request

import grpc
import jwt
import pytest


def test_token_verifies_with_pyjwt_and_the_http_jwks(server, stubs):
    users, grpc_users = stubs["users"], stubs["users_grpc"]
    sign_in, grpc_sign_in = stubs["sign_in"], stubs["sign_in_grpc"]
    sessions, grpc_sessions = stubs["sessions"], stubs["sessions_grpc"]
    # The browser's agent, as a grpc-web proxy would pass it on; gRPC adds
    # its own after it.
    firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"
    with grpc.insecure_channel(server.address, options=[("grpc.primary_user_agent", firefox)]) as channel:
        user = grpc_users.UserServiceStub(channel).CreateUser(
            users.CreateUserRequest(email_addresses=["ada@example.com"], password="correct horse battery")
        ).user
        front = grpc_sign_in.SignInServiceStub(channel)
        started = front.CreateSignIn(sign_in.CreateSignInRequest(identifier="ada@example.com")).sign_in
        done = front.AttemptFirstFactor(
            sign_in.AttemptFirstFactorRequest(
                sign_in_id=started.id,
                strategy=sign_in.SIGN_IN_STRATEGY_PASSWORD,
                password="correct horse battery",
            )
        )
        backend_jwt = grpc_sessions.SessionServiceStub(channel).CreateSessionToken(
            sessions.CreateSessionTokenRequest(session_id=done.session.id, expires_in_seconds=120)
        ).jwt

    with urllib.request.urlopen(f"http://{server.http_address}/.well-known/jwks.json") as response:
        assert response.headers["Content-Type"] == "application/json"
        jwks = json.load(response)
    assert [k["alg"] for k in jwks["keys"]] == ["RS256"]
    assert all(k["kty"] == "RSA" and k["use"] == "sig" and "d" not in k for k in jwks["keys"])

    client = jwt.PyJWKClient(f"http://{server.http_address}/.well-known/jwks.json")
    for token, lifetime in [(done.session_token, 60), (backend_jwt, 120)]:
        key = client.get_signing_key_from_jwt(token)
        claims = jwt.decode(
            token,
            key.key,
            algorithms=["RS256"],
            issuer="roster",
            options={"require": ["exp", "iat", "nbf", "iss", "sub", "sid"]},
        )
        assert claims["sub"] == user.id
        assert claims["sid"] == done.session.id
        assert claims["exp"] - claims["iat"] == lifetime
        # A token altered after signing does not verify.
        head, body, signature = token.split(".")
        forged = ".".join([head, body[:-2] + ("AA" if body[-2:] != "AA" else "BB"), signature])
        with pytest.raises(jwt.InvalidTokenError):
            jwt.decode(forged, key.key, algorithms=["RS256"], issuer="roster")

    activity = done.session.latest_activity
    assert activity.user_agent.startswith(firefox)
    assert activity.ip_address == "127.0.0.1"
    assert (activity.browser_name, activity.device_type, activity.is_mobile) == ("Firefox", "desktop", False)
