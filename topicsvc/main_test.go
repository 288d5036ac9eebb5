package topicsvc_test

import (
	"testing"

	"github.com/OSMeteor/firetower/topicsvc/internal/svctest"
)

func TestMain(m *testing.M) { svctest.Main(m) }
