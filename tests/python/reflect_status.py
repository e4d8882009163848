#!/usr/bin/env python3
"""Calls ste.v1.Agent/GetStatus knowing nothing but the address: the
service's schema comes from the agent's gRPC server reflection, not from
STE's generated code. Prints the response as JSON.

usage: reflect_status.py HOST:PORT
"""
import json
import sys

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def main() -> int:
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
