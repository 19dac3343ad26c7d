module wasmhost.local/sdk

go 1.24
