package main

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/OSMeteor/firetower"
	_ "github.com/OSMeteor/firetower/topicsvc/client"
	"github.com/gin-gonic/gin"
)

// firetowerServer is firetower as a user mounts it: a gin app with the
// Tower's middleware, its defaults, and a REST token. brokerURL empty means
// the embedded topic service.
func firetowerServer(brokerURL string, hist historyOpts) (http.Handler, func(), error) {
	gin.SetMode(gin.ReleaseMode)
	if hist.Size > 0 {
		return nil, nil, errors.New("firetower history: not in this build")
	}
	tower, err := firetower.New(firetower.Config{
		APIToken:                benchToken,
		InsecureSkipOriginCheck: true,
		BrokerURL:               brokerURL,
		BrokerToken:             benchToken,
	})
	if err != nil {
		return nil, nil, err
	}
	r := gin.New()
	r.Use(tower.Middleware())
	stop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tower.Shutdown(ctx)
	}
	return r, stop, nil
}
