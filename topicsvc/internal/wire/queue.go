package wire

import "sync"

// Queue is the bounded FIFO between the goroutines that produce a
// stream's operations and the one goroutine that sends them. A producer
// appends under a mutex, with no channel operation per message; the sender
// takes everything queued at once and hands the slice back once sent, so
// batches grow with the load and two slices serve a stream for its life.
type Queue[T any] struct {
	limit int
	ready chan struct{} // holds a token while items may be queued

	mu    sync.Mutex
	items []T
	spare []T
	room  chan struct{} // closed at the next Take; made for producers that wait
}

// NewQueue returns a queue that holds at most limit items.
func NewQueue[T any](limit int) *Queue[T] {
	return &Queue[T]{limit: limit, ready: make(chan struct{}, 1)}
}

// Ready returns the channel that holds a token once items may be queued:
// the sender waits on it, then takes.
func (q *Queue[T]) Ready() <-chan struct{} { return q.ready }

// Push queues v and reports true, or reports false if limit items wait.
func (q *Queue[T]) Push(v T) bool {
	q.mu.Lock()
	if len(q.items) >= q.limit {
		q.mu.Unlock()
		return false
	}
	q.items = append(q.items, v)
	first := len(q.items) == 1
	q.mu.Unlock()
	if first {
		// Only the Push that makes the queue non-empty wakes the sender:
		// whatever follows before it takes the queue goes in the same batch.
		select {
		case q.ready <- struct{}{}:
		default:
		}
	}
	return true
}

// PushSome queues as many of vs as there is room for, in order, and
// returns how many: a producer's burst then goes to the sender in one Take
// rather than waking it once per item.
func (q *Queue[T]) PushSome(vs []T) int {
	q.mu.Lock()
	n := min(len(vs), max(q.limit-len(q.items), 0))
	q.items = append(q.items, vs[:n]...)
	first := n > 0 && len(q.items) == n
	q.mu.Unlock()
	if first {
		select {
		case q.ready <- struct{}{}:
		default:
		}
	}
	return n
}

// RoomSignal returns a channel that is closed once a Push may succeed
// again.
func (q *Queue[T]) RoomSignal() <-chan struct{} {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) < q.limit {
		return closedChan
	}
	if q.room == nil {
		q.room = make(chan struct{})
	}
	return q.room
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// Take returns every queued item, oldest first. The sender passes the
// slice to Recycle once it is done with it.
func (q *Queue[T]) Take() []T {
	q.mu.Lock()
	defer q.mu.Unlock()
	items := q.items
	q.items, q.spare = q.spare, nil
	if q.room != nil {
		close(q.room)
		q.room = nil
	}
	return items
}

// maxSpare is the largest slice, in items, that a queue keeps for reuse,
// the default queue size: a queue of a larger size lets go of what a burst
// grew to rather than hold it for the life of the stream. (Keeping less
// made the benchmark regrow its slice, with a dozen copies, on every Take
// of more than 3,408 items.) A queue holds at most two slices: 2 MiB at 64
// bytes an item.
const maxSpare = 16384

// Recycle gives back a slice that Take returned, for a later batch.
func (q *Queue[T]) Recycle(items []T) {
	if cap(items) > maxSpare {
		return
	}
	clear(items) // the messages it refers to may go
	q.mu.Lock()
	if q.spare == nil {
		q.spare = items[:0]
	}
	q.mu.Unlock()
}

// Len returns how many items wait.
func (q *Queue[T]) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items)
}
