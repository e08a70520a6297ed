# pkgtool developer targets.
#
# protos: regenerate the committed BuildKit messages in pkgtool/buildkit/_gen from the .proto
# files in pkgtool/buildkit/protos (needs grpcio-tools, a test extra; never needed at run time).
# No gRPC service modules: client stubs come from the descriptors (pkgtool/buildkit/stubs.py)
# and the session server registers its handlers itself.
# protoc writes top-level imports (`import wire_pb2`); the sed turns them into relative ones
# so the stubs work as a subpackage.

PYTHON ?= python3
PROTO_DIR := pkgtool/buildkit/protos
GEN_DIR ?= pkgtool/buildkit/_gen

.PHONY: protos
protos:
	rm -f $(GEN_DIR)/*_pb2.py $(GEN_DIR)/*_pb2.pyi $(GEN_DIR)/*_pb2_grpc.py
	cd $(PROTO_DIR) && $(PYTHON) -m grpc_tools.protoc -I. \
		--python_out=$(abspath $(GEN_DIR)) --pyi_out=$(abspath $(GEN_DIR)) *.proto
	sed -i -E 's/^import ([a-z_]+_pb2) as /from . import \1 as /' $(GEN_DIR)/*_pb2.py $(GEN_DIR)/*_pb2.pyi
