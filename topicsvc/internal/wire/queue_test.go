package wire

import (
	"testing"
	"time"
)

func TestQueue(t *testing.T) {
	q := NewQueue[int](3)
	if got := q.Take(); len(got) != 0 {
		t.Fatalf("take of an empty queue: %v", got)
	}
	for i := range 3 {
		if !q.Push(i) {
			t.Fatalf("push %d refused below the limit", i)
		}
	}
	if q.Push(3) {
		t.Fatal("push beyond the limit accepted")
	}
	select {
	case <-q.Ready():
	default:
		t.Fatal("no ready token after the first push")
	}
	room := q.RoomSignal()
	select {
	case <-room:
		t.Fatal("room signalled while the queue is full")
	default:
	}
	done := make(chan bool)
	go func() {
		<-room
		done <- q.Push(3) // a producer that waited for room
	}()
	got := q.Take()
	if len(got) != 3 || got[0] != 0 || got[2] != 2 {
		t.Fatalf("take: %v", got)
	}
	select {
	case ok := <-done:
		if !ok {
			t.Fatal("push after take refused")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a waiting producer was not woken by take")
	}
	q.Recycle(got)
	if q.Len() != 1 {
		t.Fatalf("len %d after one push, want 1", q.Len())
	}
	if next := q.Take(); len(next) != 1 || next[0] != 3 {
		t.Fatalf("second take: %v", next)
	}
	select {
	case <-q.RoomSignal():
	default:
		t.Fatal("no room signalled on a queue with room")
	}

	// A slice grown beyond maxSpare is let go; smaller ones are reused.
	big := NewQueue[int](2 * maxSpare)
	for i := range maxSpare + 1 {
		big.Push(i)
	}
	items := big.Take()
	big.Recycle(items)
	big.Push(1)
	if again := big.Take(); cap(again) == cap(items) && &again[:1][0] == &items[:1][0] {
		t.Fatal("a slice larger than maxSpare was kept")
	}
}
