"""A Python client generated from the protos with grpcio-tools creates,
lists, updates and deletes users, and reads Roster's error details."""

import grpc
import pytest
from google.protobuf import field_mask_pb2, struct_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status


def error_reason(err):
    status = rpc_status.from_call(err)
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason, info.domain
    return None, None


def test_create_list_update_delete(server, stubs):
    users, grpc_users = stubs["users"], stubs["users_grpc"]
    with grpc.insecure_channel(server.address) as channel:
        client = grpc_users.UserServiceStub(channel)
        metadata = struct_pb2.Struct()
        metadata.update({"role": "admin", "teams": ["a", "b"]})
        created = client.CreateUser(
            users.CreateUserRequest(
                email_addresses=["grace@example.com"],
                first_name="Grace",
                last_name="Hopper",
                password="a long enough password",
                public_metadata=metadata,
            )
        ).user
        assert created.id.startswith("user_")
        assert created.primary_email_address_id == created.email_addresses[0].id
        assert created.password_enabled
        assert dict(created.public_metadata)["role"] == "admin"

        listed = client.ListUsers(users.ListUsersRequest(filter=users.UserFilter(query="hopper")))
        assert [u.id for u in listed.users] == [created.id]
        assert listed.next_page_token == ""

        updated = client.UpdateUser(
            users.UpdateUserRequest(
                user=stubs["user"].User(id=created.id, first_name="Amazing Grace"),
                update_mask=field_mask_pb2.FieldMask(paths=["first_name"]),
            )
        ).user
        assert updated.first_name == "Amazing Grace"
        assert updated.last_name == "Hopper"

        assert client.CountUsers(users.CountUsersRequest()).total_count == 1
        deleted = client.DeleteUser(users.DeleteUserRequest(id=created.id))
        assert deleted.id == created.id
        with pytest.raises(grpc.RpcError) as err:
            client.GetUser(users.GetUserRequest(id=created.id))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert client.CountUsers(users.CountUsersRequest()).total_count == 0


def test_errors_carry_reasons_and_field_violations(server, stubs):
    users, grpc_users = stubs["users"], stubs["users_grpc"]
    with grpc.insecure_channel(server.address) as channel:
        client = grpc_users.UserServiceStub(channel)
        client.CreateUser(users.CreateUserRequest(email_addresses=["taken@example.com"]))
        with pytest.raises(grpc.RpcError) as err:
            client.CreateUser(users.CreateUserRequest(email_addresses=["TAKEN@example.com"]))
        assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert error_reason(err.value) == ("IDENTIFIER_EXISTS", "roster.dev")

        with pytest.raises(grpc.RpcError) as err:
            client.CreateUser(users.CreateUserRequest(email_addresses=["nope"], username="x"))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        status = rpc_status.from_call(err.value)
        fields = []
        for detail in status.details:
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                fields = [v.field for v in bad.field_violations]
        assert fields == ["email_addresses[0]", "username"]
