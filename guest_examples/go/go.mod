module wasmhost.local/examples/notify-followers

go 1.24

require wasmhost.local/sdk v0.0.0

replace wasmhost.local/sdk => ../sdk/go
