package main

import (
	"context"
	"net/http"
	"time"

	"github.com/OSMeteor/firetower"
	_ "github.com/OSMeteor/firetower/topicsvc/client"
	"github.com/gin-gonic/gin"
)

// firetowerServer is firetower as a user mounts it: a gin app with the
// Tower's middleware, its defaults, and a REST token. brokerURL empty means
// the embedded topic service. With history, every topic keeps hist.Size
// messages for hist.TTL (Config.TopicOptions).
func firetowerServer(brokerURL string, hist historyOpts) (http.Handler, func(), error) {
	gin.SetMode(gin.ReleaseMode)

	cfg := firetower.Config{
		APIToken:                benchToken,
		InsecureSkipOriginCheck: true,
		BrokerURL:               brokerURL,
		BrokerToken:             benchToken,
	}
	if hist.Size > 0 {
		// Every topic keeps history, as a user turns it on for chat rooms.
		opts := firetower.TopicOptions{HistorySize: hist.Size, HistoryTTL: hist.TTL}
		cfg.TopicOptions = func(string) firetower.TopicOptions { return opts }
	}
	tower, err := firetower.New(cfg)
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
