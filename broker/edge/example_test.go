package edge_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"

	"github.com/mandate-dev/mandate/broker/edge"
)

func ExampleValidator_Middleware() {
	ctx := context.Background()
	feed, err := edge.NewFeed(edge.FeedConfig{Issuer: "https://mandate.example.com"})
	if err != nil {
		log.Fatal(err)
	}
	go func() { _ = feed.Run(ctx) }()

	v, err := edge.New(ctx, edge.Config{
		Issuer:   "https://mandate.example.com",
		Audience: "https://files.example.com",
		Feed:     feed,
	})
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	read := v.Middleware(edge.Requirements{Scopes: []string{"files:read"}})
	mux.Handle("GET /files/{id}", read(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _ := edge.FromContext(r.Context())
		fmt.Fprintf(w, "%s via %v\n", id.Subject, id.Actors)
	})))
	log.Fatal(http.ListenAndServe(":8080", mux))
}

func ExampleValidator_Validate() {
	var v *edge.Validator // from edge.New
	handler := func(w http.ResponseWriter, r *http.Request) {
		token, err := edge.BearerToken(r)
		var id *edge.Identity
		if err == nil {
			id, err = v.Validate(r.Context(), token, edge.Requirements{Scopes: []string{"mail:send"}})
		}
		if err != nil {
			if errors.Is(err, edge.ErrRevocationStale) {
				log.Print(err) // an operator problem, not the client's
			}
			w.Header().Set("WWW-Authenticate", edge.WWWAuthenticate(err, "mail", []string{"mail:send"}))
			w.WriteHeader(edge.HTTPStatus(err))
			return
		}
		fmt.Fprintf(w, "sending as %s for client %s\n", id.Subject, id.ClientID)
	}
	_ = handler
}

func ExampleWWWAuthenticate() {
	// As returned by Validate for a token without the route's scope.
	var err error = &edge.Error{Kind: edge.ErrInsufficientScope, Detail: `scope "files:write" missing`}
	fmt.Println(edge.HTTPStatus(err))
	fmt.Println(edge.WWWAuthenticate(err, "files", []string{"files:write"}))
	// Output:
	// 403
	// Bearer realm="files", error="insufficient_scope", error_description="The request requires higher privileges than provided by the access token", scope="files:write"
}
