//! The method options of `psrpc/options.proto` (extension 2198 on `MethodOptions`).
