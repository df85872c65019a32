#!/usr/bin/env python3
"""Reads a TensorBoard event file as TensorBoard would, independently of Cohort's writer.

    read_tfevents.py EVENT_FILE PROTO_FILE

Checks the TFRecord framing of every record (length, masked CRC-32C of the length, data,
masked CRC-32C of the data; the CRC computed here bit by bit), decodes each record as a
tensorflow.Event with protoc's Python code for PROTO_FILE (python3-protobuf), and prints
JSON: {"file_version": str, "records": N, "steps": {"STEP": {"TAG": value}}}.
Exit 1 naming the record when a check fails; exit 77 when protobuf or protoc is missing.
"""
import importlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile


def crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def masked(data):
    crc = crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def records(blob):
    offset, index = 0, 0
    while offset < len(blob):
        header = blob[offset:offset + 12]
        if len(header) < 12:
            raise ValueError(f"record {index}: file ends inside its header")
        (length,) = struct.unpack("<Q", header[:8])
        (length_crc,) = struct.unpack("<I", header[8:12])
        if masked(header[:8]) != length_crc:
            raise ValueError(f"record {index}: length CRC mismatch")
        data = blob[offset + 12:offset + 12 + length]
        footer = blob[offset + 12 + length:offset + 16 + length]
        if len(data) != length or len(footer) != 4:
            raise ValueError(f"record {index}: file ends inside its data")
        if masked(data) != struct.unpack("<I", footer)[0]:
            raise ValueError(f"record {index}: data CRC mismatch")
        yield data
        offset += 16 + length
        index += 1


def main():
    event_file, proto_file = sys.argv[1], sys.argv[2]
    if shutil.which("protoc") is None:
        print("protoc is not installed (protobuf-compiler)", file=sys.stderr)
        return 77
    try:
        import google.protobuf  # noqa: F401
    except ImportError:
        print("python3-protobuf is not installed", file=sys.stderr)
        return 77
    with tempfile.TemporaryDirectory() as out:
        proto_dir, proto_name = os.path.split(os.path.abspath(proto_file))
        subprocess.run(["protoc", f"-I{proto_dir}", f"--python_out={out}", proto_name], check=True)
        sys.path.insert(0, out)
        module = importlib.import_module(proto_name[:-len(".proto")] + "_pb2")
        with open(event_file, "rb") as f:
            blob = f.read()
        result = {"file_version": None, "records": 0, "steps": {}}
        try:
            for data in records(blob):
                event = module.Event()
                event.ParseFromString(data)
                result["records"] += 1
                if event.WhichOneof("what") == "file_version":
                    result["file_version"] = event.file_version
                elif event.WhichOneof("what") == "summary":
                    step = result["steps"].setdefault(str(event.step), {})
                    for value in event.summary.value:
                        step[value.tag] = value.simple_value
        except ValueError as e:
            print(f"{event_file}: {e}", file=sys.stderr)
            return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
