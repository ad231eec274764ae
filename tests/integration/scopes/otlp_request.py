"""Writes an OTLP ExportProfilesServiceRequest to standard output, built with the official
OpenTelemetry message classes (PyPI opentelemetry-proto, profiles/v1development).

    python otlp_request.py proto|json SERVICE [SERVICE ...]

One ResourceProfiles per SERVICE, its resource carrying service.name = SERVICE (a SERVICE of
"-" gets no service.name), each with one scope and one empty profile.
"""

import sys

from google.protobuf import json_format
from opentelemetry.proto.collector.profiles.v1development import profiles_service_pb2


def main() -> None:
    fmt, services = sys.argv[1], sys.argv[2:]
    request = profiles_service_pb2.ExportProfilesServiceRequest()
    for service in services:
        resource_profiles = request.resource_profiles.add()
        if service != "-":
            attribute = resource_profiles.resource.attributes.add()
            attribute.key = "service.name"
            attribute.value.string_value = service
        other = resource_profiles.resource.attributes.add()
        other.key = "host.name"
        other.value.string_value = "test-host"
        scope = resource_profiles.scope_profiles.add()
        scope.scope.name = "pyrogate-test"
        scope.profiles.add()
    if fmt == "json":
        sys.stdout.write(json_format.MessageToJson(request, indent=None))
    else:
        sys.stdout.buffer.write(request.SerializeToString())


if __name__ == "__main__":
    main()
