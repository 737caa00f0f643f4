// Package mailapi is the example resource server: a small mail API that accepts
// nothing but mandate's delegated tokens, validated where the request arrives by
// github.com/mandate-dev/mandate/broker/edge. No request reaches mandate: the
// validator checks the signature against mandate's cached JWKS, the issuer, the
// API's audience, expiry, the route's scope, and the revocation set that an
// edge.Feed keeps in step with mandate's revocation feed.
//
//	s, err := mailapi.Start(ctx, mailapi.Config{Issuer: "http://127.0.0.1:8080"})
//	if err != nil {
//		return err
//	}
//	http.ListenAndServe("127.0.0.1:8090", s.Handler())
//
// Routes:
//
//	GET  /mail/messages   scope mail:read   the caller's inbox
//	POST /mail/send       scope mail:send   queue a message ({"to", "subject", "body"})
//	GET  /healthz         no token          liveness
//
// Every answer to a valid token shows who is calling (Caller): the user, the
// client holding the token, the delegation chain (current actor first) and the
// scopes. A missing, invalid, expired or revoked token, or one for another
// audience, gets 401; a valid token without the route's scope gets 403; both
// carry an RFC 6750 WWW-Authenticate challenge.
package mailapi

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/mandate-dev/mandate/broker/edge"
)

// DefaultAudience is the API's resource identifier: tokens must name it in "aud".
const DefaultAudience = "https://api.example.com/mail"

// Scopes the routes require.
const (
	ScopeRead = "mail:read"
	ScopeSend = "mail:send"
)

const (
	// DefaultFeedWait is how long a revocation long-poll may be held. mandate
	// serve's HTTP write timeout is 15 s (http.write_timeout), which cuts a longer
	// poll (the edge package's default, 20 s) before its answer: stay below it.
	DefaultFeedWait = 10 * time.Second
	// syncTimeout bounds the wait for the feed's first answer at start-up.
	syncTimeout   = 10 * time.Second
	maxSendBody   = 16 << 10
	realm         = "mail"
	maxFieldBytes = 1000
)

// Config configures the API.
type Config struct {
	// Issuer is mandate's issuer URL; tokens must carry it in "iss", and its
	// JWKS and revocation feed are read from it.
	Issuer string
	// Audience is the API's resource identifier. Default DefaultAudience.
	Audience string
	// FeedWait is the revocation feed's long-poll. Default DefaultFeedWait.
	FeedWait time.Duration
	// HTTPClient fetches the JWKS and follows the feed. Default: the edge
	// package's clients.
	HTTPClient *http.Client
	// Logger receives one line per request and the feed's warnings. Default: slog.Default().
	Logger *slog.Logger
}

// Server is a started API: its feed follows mandate until the Start context ends.
type Server struct {
	// Validator validates the API's tokens; Feed keeps its revocation set current.
	Validator *edge.Validator
	Feed      *edge.Feed
	handler   http.Handler
}

// Start fetches mandate's keys and the revocation snapshot (at most 10 s), so
// that no request meets an unsynchronised revocation set, follows the
// revocation feed until ctx is done, and returns the API.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	aud := cfg.Audience
	if aud == "" {
		aud = DefaultAudience
	}
	wait := cfg.FeedWait
	if wait == 0 {
		wait = DefaultFeedWait
	}
	feed, err := edge.NewFeed(edge.FeedConfig{Issuer: cfg.Issuer, HTTPClient: cfg.HTTPClient, Wait: wait, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("mailapi: %w", err)
	}
	v, err := edge.New(ctx, edge.Config{
		Issuer: cfg.Issuer, Audience: aud, Feed: feed, HTTPClient: cfg.HTTPClient, Realm: realm, Logger: log,
	})
	if err != nil {
		return nil, fmt.Errorf("mailapi: %w", err)
	}
	// The first poll takes the snapshot, here rather than in Run: Run pauses up
	// to a second after a snapshot that is empty (answered at once, it looks like
	// a broker that does not hold long-polls), which would delay revocations made
	// in that second. From the snapshot's cursor on, Run's polls are held.
	sctx, cancel := context.WithTimeout(ctx, syncTimeout)
	defer cancel()
	if err := feed.Poll(sctx, 0); err != nil {
		return nil, fmt.Errorf("mailapi: revocation feed of %s: %w", cfg.Issuer, err)
	}
	go func() { _ = feed.Run(ctx) }() // returns ctx's error when ctx ends
	return &Server{Validator: v, Feed: feed, handler: NewHandler(v, log)}, nil
}

// Handler returns the API's HTTP handler.
func (s *Server) Handler() http.Handler { return s.handler }

// NewHandler builds the API's routes on a validator configured with the API's
// audience. It is the handler constructor to mount in another server or test.
func NewHandler(v *edge.Validator, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.Default()
	}
	read := v.Middleware(edge.Requirements{Scopes: []string{ScopeRead}})
	send := v.Middleware(edge.Requirements{Scopes: []string{ScopeSend}})
	mux := http.NewServeMux()
	mux.Handle("GET /mail/messages", read(http.HandlerFunc(listMessages)))
	mux.Handle("POST /mail/send", send(http.HandlerFunc(sendMessage)))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	return accessLog(log, mux)
}

// Caller is who is calling, from the validated token.
type Caller struct {
	// User is the user the token acts for ("sub"), and UserIssuer their identity
	// provider ("sub_iss").
	User       string `json:"user"`
	UserIssuer string `json:"user_issuer,omitempty"`
	// Client is the client holding the token ("client_id").
	Client string `json:"client"`
	// Actors is the delegation chain, the current actor first.
	Actors  []string `json:"actors"`
	Scopes  []string `json:"scopes"`
	GrantID string   `json:"grant_id,omitempty"`
	Depth   int      `json:"depth"`
}

func callerOf(id *edge.Identity) Caller {
	c := Caller{User: id.Subject, UserIssuer: id.SubjectIssuer, Client: id.ClientID,
		Actors: id.Actors, Scopes: id.Scopes, GrantID: id.GrantID, Depth: id.Depth}
	// Identity is shared with the validator's cache: copy, never modify.
	if c.Actors == nil {
		c.Actors = []string{}
	}
	if c.Scopes == nil {
		c.Scopes = []string{}
	}
	return c
}

// Message is one mail in the example inbox.
type Message struct {
	ID      string `json:"id"`
	From    string `json:"from"`
	To      string `json:"to"`
	Subject string `json:"subject"`
}

// MessagesResponse answers GET /mail/messages.
type MessagesResponse struct {
	Caller   Caller    `json:"caller"`
	Messages []Message `json:"messages"`
}

// SendRequest is the body of POST /mail/send.
type SendRequest struct {
	To      string `json:"to"`
	Subject string `json:"subject"`
	Body    string `json:"body"`
}

// SendResponse answers POST /mail/send.
type SendResponse struct {
	Caller Caller `json:"caller"`
	Queued string `json:"queued"` // the id of the queued message
}

func listMessages(w http.ResponseWriter, r *http.Request) {
	id, ok := edge.FromContext(r.Context())
	if !ok { // the middleware always sets it; fail closed if it ever does not
		http.Error(w, "no identity", http.StatusInternalServerError)
		return
	}
	// A fixed inbox: the point is who may read it, not what is in it.
	msgs := []Message{
		{ID: "m-1001", From: "bob@example.com", To: id.Subject, Subject: "Lunch on Friday?"},
		{ID: "m-1002", From: "billing@example.com", To: id.Subject, Subject: "Your invoice for November"},
		{ID: "m-1003", From: "carol@example.com", To: id.Subject, Subject: "Draft of the Q4 plan"},
	}
	writeJSON(w, http.StatusOK, MessagesResponse{Caller: callerOf(id), Messages: msgs})
}

func sendMessage(w http.ResponseWriter, r *http.Request) {
	id, ok := edge.FromContext(r.Context())
	if !ok {
		http.Error(w, "no identity", http.StatusInternalServerError)
		return
	}
	var req SendRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxSendBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request", "error_description": "body must be JSON {to, subject, body}"})
		return
	}
	if req.To == "" || len(req.To) > maxFieldBytes || len(req.Subject) > maxFieldBytes {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request", "error_description": "to is required; to and subject are at most 1000 bytes"})
		return
	}
	// Nothing is sent: the example only shows that the token allowed it.
	writeJSON(w, http.StatusAccepted, SendResponse{Caller: callerOf(id), Queued: "q-" + strings.ToLower(rand.Text()[:8])})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// accessLog writes one line per request: method, path, status and, for a
// refusal, the challenge (never the token).
func accessLog(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		attrs := []slog.Attr{slog.String("method", r.Method), slog.String("path", r.URL.Path), slog.Int("status", rec.status)}
		if c := rec.Header().Get("WWW-Authenticate"); c != "" {
			attrs = append(attrs, slog.String("challenge", c))
		}
		log.LogAttrs(r.Context(), slog.LevelInfo, "mailapi: request", attrs...)
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// ChallengeError returns the RFC 6750 error code of a refusal's
// WWW-Authenticate header ("invalid_token", "insufficient_scope"), or "" when
// there is none (a request without a token gets a challenge without a code,
// RFC 6750 §3.1).
func ChallengeError(h http.Header) string {
	_, rest, ok := strings.Cut(h.Get("WWW-Authenticate"), `error="`)
	if !ok {
		return ""
	}
	code, _, _ := strings.Cut(rest, `"`)
	return code
}
