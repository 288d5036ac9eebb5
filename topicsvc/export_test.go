package topicsvc

// EmbeddedNode returns the Core's node of a started Embedded broker, so
// that a test can remove it as a dead session would be.
func EmbeddedNode(e *Embedded) *Node {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.node
}
