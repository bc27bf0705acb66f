"""Generated gRPC and protobuf code for package fedsilo.v1 (make proto). Do not edit."""
