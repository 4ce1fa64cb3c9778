// Command go-client submits one Celeriac task and prints its result, using only
// the official NATS Go client and the JSON protocol of docs/protocol.md.
//
//	go-client -url nats://127.0.0.1:4222 -queue default -task proj.tasks.add -args '[2, 3]'
//
// On SUCCESS it prints the task's result as JSON and exits 0. A task that ends
// FAILURE or REVOKED, no final result within -timeout, or an unreachable server
// prints one sentence on stderr and exits 1; a bad flag exits 2.
package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// taskMessage is the task envelope ("The task envelope" in docs/protocol.md);
// the optional fields this program does not use are left out.
type taskMessage struct {
	V      int             `json:"v"`
	ID     string          `json:"id"`
	Task   string          `json:"task"`
	Args   json.RawMessage `json:"args"`
	Kwargs json.RawMessage `json:"kwargs"`
	Queue  string          `json:"queue"`
}

// resultRecord is the part of a result record ("Results") this program reads.
type resultRecord struct {
	State  string          `json:"state"`
	Result json.RawMessage `json:"result"`
	Error  string          `json:"error"`
}

// docs:begin
// publishTask sends the envelope to the queue's task subject through JetStream.
// Nats-Msg-Id makes a resubmission after a lost acknowledgement harmless.
func publishTask(ctx context.Context, js jetstream.JetStream, task taskMessage) error {
	body, err := json.Marshal(task)
	if err != nil {
		return err
	}
	msg := nats.NewMsg("celeriac.tasks." + task.Queue)
	msg.Header.Set("Nats-Msg-Id", task.ID)
	msg.Header.Set("Celeriac-Task", task.Task)
	msg.Header.Set("Celeriac-Protocol", "1")
	msg.Data = body
	_, err = js.PublishMsg(ctx, msg)
	return err
}

// waitForResult watches the task's key in the results bucket until a final state.
func waitForResult(ctx context.Context, js jetstream.JetStream, taskID string) (resultRecord, error) {
	results, err := js.KeyValue(ctx, "celeriac_results")
	for errors.Is(err, jetstream.ErrBucketNotFound) {
		// The bucket appears with the first result stored: until then, PENDING.
		select {
		case <-ctx.Done():
			return resultRecord{}, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		results, err = js.KeyValue(ctx, "celeriac_results")
	}
	if err != nil {
		return resultRecord{}, err
	}
	watcher, err := results.Watch(ctx, taskID)
	if err != nil {
		return resultRecord{}, err
	}
	defer watcher.Stop()
	for {
		select {
		case <-ctx.Done():
			return resultRecord{}, ctx.Err()
		case entry, open := <-watcher.Updates():
			if !open {
				return resultRecord{}, errors.New("the watch on the results bucket ended")
			}
			// nil marks the end of the stored values: no record yet means PENDING.
			if entry == nil || entry.Operation() != jetstream.KeyValuePut {
				continue
			}
			var record resultRecord
			if err := json.Unmarshal(entry.Value(), &record); err != nil {
				return resultRecord{}, fmt.Errorf("result record is not JSON: %w", err)
			}
			switch record.State {
			case "SUCCESS", "FAILURE", "REVOKED":
				return record, nil
			}
		}
	}
}

// docs:end

func main() {
	os.Exit(run())
}

func run() int {
	defaultURL := os.Getenv("CELERIAC_NATS_URL")
	if defaultURL == "" {
		defaultURL = nats.DefaultURL
	}
	url := flag.String("url", defaultURL, "NATS URL, or a comma-separated list (default $CELERIAC_NATS_URL)")
	queue := flag.String("queue", "default", "queue to send the task to")
	task := flag.String("task", "", "registered task name, e.g. proj.tasks.add (required)")
	args := flag.String("args", "[]", "positional arguments, a JSON array")
	kwargs := flag.String("kwargs", "{}", "keyword arguments, a JSON object")
	id := flag.String("id", "", "task id (default: a random one)")
	timeout := flag.Duration("timeout", 30*time.Second, "how long to wait for the final result")
	flag.Parse()

	message, err := buildMessage(*id, *task, *args, *kwargs, *queue)
	if err != nil {
		fmt.Fprintf(os.Stderr, "go-client: %v\n", err)
		return 2
	}
	if *timeout <= 0 {
		fmt.Fprintln(os.Stderr, "go-client: -timeout must be above 0")
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	record, err := submit(ctx, *url, *timeout, message)
	if err != nil {
		fmt.Fprintf(os.Stderr, "go-client: %v\n", err)
		return 1
	}
	switch record.State {
	case "SUCCESS":
		result := record.Result
		if len(result) == 0 {
			result = json.RawMessage("null")
		}
		fmt.Println(string(result))
		return 0
	case "REVOKED":
		fmt.Fprintf(os.Stderr, "go-client: task %s was revoked: %s\n", message.ID, record.Error)
	default:
		fmt.Fprintf(os.Stderr, "go-client: task %s failed: %s\n", message.ID, record.Error)
	}
	return 1
}

// buildMessage checks the flags and makes the envelope.
func buildMessage(id, task, args, kwargs, queue string) (taskMessage, error) {
	if task == "" {
		return taskMessage{}, errors.New("-task is required (a registered task name)")
	}
	var positional []json.RawMessage
	if err := json.Unmarshal([]byte(args), &positional); err != nil || positional == nil {
		return taskMessage{}, fmt.Errorf("-args is not a JSON array: %s", args)
	}
	var keywords map[string]json.RawMessage
	if err := json.Unmarshal([]byte(kwargs), &keywords); err != nil || keywords == nil {
		return taskMessage{}, fmt.Errorf("-kwargs is not a JSON object: %s", kwargs)
	}
	if id == "" {
		id = rand.Text()
	}
	return taskMessage{
		V: 1, ID: id, Task: task, Args: json.RawMessage(args), Kwargs: json.RawMessage(kwargs), Queue: queue,
	}, nil
}

// submit connects, publishes the task and waits for its final result record,
// turning each way this can fail into a sentence that names the thing.
func submit(ctx context.Context, url string, timeout time.Duration, task taskMessage) (resultRecord, error) {
	nc, err := nats.Connect(url, nats.Timeout(min(timeout, 5*time.Second)))
	if err != nil {
		return resultRecord{}, fmt.Errorf("cannot reach NATS at %s: %v", url, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return resultRecord{}, fmt.Errorf("cannot use JetStream at %s: %v", url, err)
	}
	err = publishTask(ctx, js, task)
	switch {
	case errors.Is(err, jetstream.ErrNoStreamResponse):
		return resultRecord{}, fmt.Errorf("unknown queue %q: no stream takes celeriac.tasks.%s", task.Queue, task.Queue)
	case errors.Is(err, context.DeadlineExceeded):
		return resultRecord{}, fmt.Errorf("no acknowledgement for task %s within %s", task.ID, timeout)
	case err != nil:
		return resultRecord{}, fmt.Errorf("cannot submit task %s to queue %q: %v", task.ID, task.Queue, err)
	}
	record, err := waitForResult(ctx, js, task.ID)
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return resultRecord{}, fmt.Errorf("no final result for task %s within %s", task.ID, timeout)
	case err != nil:
		return resultRecord{}, fmt.Errorf("cannot read the result of task %s: %v", task.ID, err)
	}
	return record, nil
}
