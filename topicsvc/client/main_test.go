package client_test

import (
	"testing"

	"github.com/OSMeteor/firetower/topicsvc/internal/svctest"
)

func TestMain(m *testing.M) { svctest.Main(m) }

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
