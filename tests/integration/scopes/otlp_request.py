"""Writes an OTLP ExportProfilesServiceRequest to standard output, built with the official
OpenTelemetry message classes (PyPI opentelemetry-proto, profiles/v1development).

    python otlp_request.py proto|json SERVICE[:sample=NAME][:label=NAME] ...

One ResourceProfiles per SERVICE, its resource carrying service.name = SERVICE (a SERVICE of
"-" gets no service.name), each with one scope and one profile. With sample=NAME the profile
has a sample whose attributes hold service.name = NAME (an entry of the request's dictionary,
keyed as this version of the classes keys it); with label=NAME the resource also carries a
service_name = NAME attribute. Pyroscope files such samples under NAME, and turns such an
attribute into a service_name label.
"""

import sys

from google.protobuf import json_format
from opentelemetry.proto.collector.profiles.v1development import profiles_service_pb2


def main() -> None:
    fmt, services = sys.argv[1], sys.argv[2:]
    request = profiles_service_pb2.ExportProfilesServiceRequest()
    for spec in services:
        service, *options = spec.split(":")
        options = dict(o.split("=", 1) for o in options)
        resource_profiles = request.resource_profiles.add()
        if service != "-":
            attribute = resource_profiles.resource.attributes.add()
            attribute.key = "service.name"
            attribute.value.string_value = service
        other = resource_profiles.resource.attributes.add()
        other.key = "host.name"
        other.value.string_value = "test-host"
        if "label" in options:
            label = resource_profiles.resource.attributes.add()
            label.key = "service_name"
            label.value.string_value = options["label"]
        scope = resource_profiles.scope_profiles.add()
        scope.scope.name = "pyrogate-test"
        profile = scope.profiles.add()
        if "sample" in options:
            dictionary = request.dictionary
            entry = dictionary.attribute_table.add()
            if "key_strindex" in entry.DESCRIPTOR.fields_by_name:
                if not dictionary.string_table:
                    dictionary.string_table.append("")
                dictionary.string_table.append("service.name")
                entry.key_strindex = len(dictionary.string_table) - 1
            else:
                entry.key = "service.name"
            entry.value.string_value = options["sample"]
            samples = profile.samples if "samples" in profile.DESCRIPTOR.fields_by_name else profile.sample
            samples.add().attribute_indices.append(len(dictionary.attribute_table) - 1)
    if fmt == "json":
        sys.stdout.write(json_format.MessageToJson(request, indent=None))
    else:
        sys.stdout.buffer.write(request.SerializeToString())


if __name__ == "__main__":
    main()
