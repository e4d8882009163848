#!/usr/bin/env python3
"""Calls ste.v1.Agent/GetStatus knowing nothing but the address: the
service's schema comes from the agent's gRPC server reflection, not from
STE's generated code. Prints the response as JSON.

usage: reflect_status.py HOST:PORT [CA_FILE CERT_FILE KEY_FILE]

With the three files, the channel is TLS trusting CA_FILE and presenting
the client certificate CERT_FILE with its key KEY_FILE (the agent's API
refuses clients without one).
"""
import json
import sys

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def main() -> int:
    if len(sys.argv) == 5:
        ca, cert, key = (open(path, "rb").read() for path in sys.argv[2:5])
        credentials = grpc.ssl_channel_credentials(
            root_certificates=ca, private_key=key, certificate_chain=cert
        )
        channel = grpc.secure_channel(sys.argv[1], credentials)
    else:
        channel = grpc.insecure_channel(sys.argv[1])
    database = ProtoReflectionDescriptorDatabase(channel)
    services = database.get_services()
    if "ste.v1.Agent" not in services:
        print(f"ste.v1.Agent not advertised; services: {services}", file=sys.stderr)
        return 1
    pool = descriptor_pool.DescriptorPool(database)
    method = pool.FindServiceByName("ste.v1.Agent").FindMethodByName("GetStatus")
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    call = channel.unary_unary(
        "/ste.v1.Agent/GetStatus",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=response_class.FromString,
    )
    response = call(request_class(), timeout=10)
    body = json_format.MessageToDict(response, preserving_proto_field_name=True)
    print(json.dumps({"services": sorted(services), "status": body}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
