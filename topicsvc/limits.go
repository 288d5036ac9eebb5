package topicsvc

// DefaultMaxMessageSize is the largest message data, in bytes, that a
// topic service accepts unless configured otherwise; a client assumes it
// until the service says its own limit. Topics are bounded by
// broker.MaxTopicLen.
const DefaultMaxMessageSize = 4 << 20
