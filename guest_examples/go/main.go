// notify-followers in Go with the wasmhost SDK.
//
// Input:  {"author": "...", "followers": ["...", ...], "text": "..."}
// Output: {"sent": n, "failed": m, "no_devices": k}
// Every send is started before any is awaited, so deliveries run concurrently on the host.
package main

import (
	"encoding/json"

	"wasmhost.local/sdk"
)

const badInput = 1 // handle's own error code: the input is not what this function expects

type request struct {
	Author    *string   `json:"author"`
	Followers *[]string `json:"followers"`
	Text      *string   `json:"text"`
}

type message struct {
	Title string            `json:"title"`
	Body  string            `json:"body"`
	Data  map[string]string `json:"data"`
}

type summary struct {
	Sent      int `json:"sent"`
	Failed    int `json:"failed"`
	NoDevices int `json:"no_devices"`
}

//go:wasmexport handle
func handle() int32 {
	var req request
	if err := json.Unmarshal(wasmhost.Input(), &req); err != nil {
		wasmhost.Logf(wasmhost.ErrorLevel, "bad input: %v", err)
		return badInput
	}
	if req.Author == nil || req.Text == nil || req.Followers == nil {
		wasmhost.Logf(wasmhost.ErrorLevel, `bad input: "author", "followers" and "text" are required`)
		return badInput
	}
	msg, _ := json.Marshal(message{Title: *req.Author + " posted", Body: *req.Text, Data: map[string]string{"author": *req.Author}})

	// Send all first (each returns at once with a ticket), then wait for each.
	followers := *req.Followers
	tickets := make([]wasmhost.Ticket, len(followers))
	errs := make([]error, len(followers))
	for i, user := range followers {
		tickets[i], errs[i] = wasmhost.Send(user, msg)
	}
	var s summary
	for i, user := range followers {
		if errs[i] != nil {
			wasmhost.Logf(wasmhost.Warn, "send to %s refused: %v", user, errs[i])
			s.Failed++
			continue
		}
		report, err := tickets[i].WaitReport()
		switch {
		case err != nil:
			wasmhost.Logf(wasmhost.Warn, "send to %s failed: %v", user, err)
			s.Failed++
		case report.DevicesAttempted == 0:
			s.NoDevices++
		case report.OK && report.DevicesSucceeded > 0:
			s.Sent++
		default:
			s.Failed++
		}
	}
	out, _ := json.Marshal(s)
	wasmhost.Output(out)
	return 0
}

func main() {}
