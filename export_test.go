package firetower_test

import "regexp"

var regexpID = regexp.MustCompile(`"id":"[0-9a-f-]{36}"`)
