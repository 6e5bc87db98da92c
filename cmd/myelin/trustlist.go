package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/residency"
)

// trustListCmd is `myelin trust-list keygen|sign|verify` (docs/federation-policy.md, "Trust list").
func trustListCmd(args []string) error {
	const use = "usage: myelin trust-list keygen|sign|verify [flags]"
	if len(args) == 0 {
		return errors.New(use)
	}
	switch args[0] {
	case "keygen":
		return trustListKeygen(args[1:])
	case "sign":
		return trustListSign(args[1:])
	case "verify":
		return trustListVerify(args[1:])
	}
	return errors.New(use)
}

// The key file holds one line, as Matrix signing key files do:
// "ed25519 <version> <unpadded base64 seed>".
func trustListKeygen(args []string) error {
	fs := flag.NewFlagSet("trust-list keygen", flag.ExitOnError)
	out := fs.String("out", "", "the private key file to write (required; not overwritten)")
	version := fs.String("version", "1", "the key's version: its key ID is ed25519:<version>")
	_ = fs.Parse(args)
	if *out == "" {
		return errors.New("--out is required")
	}
	if *version == "" || strings.ContainsAny(*version, " \t\n:") {
		return errors.New("--version must be a word without spaces or colons")
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	line := fmt.Sprintf("ed25519 %s %s\n", *version, base64.RawStdEncoding.EncodeToString(priv.Seed()))
	f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("writing the key: %w", err)
	}
	if _, err := f.WriteString(line); err != nil {
		f.Close()
		return fmt.Errorf("writing the key: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing the key: %w", err)
	}
	fmt.Printf("key_id: ed25519:%s\npublic_key: %s\n", *version, base64.RawStdEncoding.EncodeToString(pub))
	return nil
}

func readTrustListKey(path string) (keyID string, priv ed25519.PrivateKey, err error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", nil, fmt.Errorf("reading the key: %w", err)
	}
	f := strings.Fields(string(raw))
	if len(f) != 3 || f[0] != "ed25519" {
		return "", nil, fmt.Errorf("%s: not a key file (want one line: ed25519 <version> <seed>)", path)
	}
	seed, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(f[2], "="))
	if err != nil || len(seed) != ed25519.SeedSize {
		return "", nil, fmt.Errorf("%s: the seed must be 32 bytes of unpadded base64", path)
	}
	return "ed25519:" + f[1], ed25519.NewKeyFromSeed(seed), nil
}

func trustListSign(args []string) error {
	fs := flag.NewFlagSet("trust-list sign", flag.ExitOnError)
	keyPath := fs.String("key", "", "the private key file (trust-list keygen; required)")
	keyID := fs.String("key-id", "", "the key ID to sign under (default: the key file's, ed25519:<version>)")
	in := fs.String("in", "", "the unsigned list: issuer, version, servers, optional issued_ts and expires_ts (required; - for stdin)")
	out := fs.String("out", "", "the signed list to write (default: stdout)")
	_ = fs.Parse(args)
	if *keyPath == "" || *in == "" {
		return errors.New("--key and --in are required")
	}
	fileKeyID, priv, err := readTrustListKey(*keyPath)
	if err != nil {
		return err
	}
	if *keyID == "" {
		*keyID = fileKeyID
	}
	if !strings.HasPrefix(*keyID, "ed25519:") || len(*keyID) == len("ed25519:") {
		return fmt.Errorf("--key-id must be ed25519:<version>, got %q", *keyID)
	}
	raw, err := readInput(*in)
	if err != nil {
		return err
	}
	var tl residency.TrustList
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&tl); err != nil {
		return fmt.Errorf("%s: not a trust list: %w", *in, err)
	}
	if err := config.ValidateServerName(tl.Issuer); err != nil {
		return fmt.Errorf("%s: issuer: %w", *in, err)
	}
	if tl.IssuedTS == 0 {
		tl.IssuedTS = time.Now().UnixMilli()
	}
	doc, err := residency.SignTrustList(tl, *keyID, priv)
	if err != nil {
		return err
	}
	// What the servers will check: it must verify as signed.
	if _, err := residency.VerifyTrustList(doc, tl.Issuer, *keyID, priv.Public().(ed25519.PublicKey)); err != nil {
		return err
	}
	doc = append(doc, '\n')
	if *out == "" {
		_, err = os.Stdout.Write(doc)
		return err
	}
	return os.WriteFile(*out, doc, 0o644)
}

func readInput(path string) ([]byte, error) {
	var r io.Reader = os.Stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	raw, err := io.ReadAll(io.LimitReader(r, residency.MaxTrustListBytes+1))
	if err != nil {
		return nil, err
	}
	if len(raw) > residency.MaxTrustListBytes {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, residency.MaxTrustListBytes)
	}
	return raw, nil
}

func trustListVerify(args []string) error {
	fs := flag.NewFlagSet("trust-list verify", flag.ExitOnError)
	var f serverFlags
	f.register(fs)
	in := fs.String("in", "", "the signed list (required; - for stdin)")
	issuer := fs.String("issuer", "", "the pinned issuer (default: the config's residency.trust_list.issuer)")
	keyID := fs.String("key-id", "", "the pinned key ID (default: the config's)")
	pubKey := fs.String("public-key", "", "the pinned public key, unpadded base64 (default: the config's)")
	_ = fs.Parse(args)
	if *in == "" {
		return errors.New("--in is required")
	}
	var cfg *config.Config
	if f.configPath != "" {
		var err error
		if cfg, err = f.load(); err != nil {
			return err
		}
		tc := cfg.Residency.TrustList
		*issuer, *keyID, *pubKey = orConfig(*issuer, tc.Issuer), orConfig(*keyID, tc.KeyID), orConfig(*pubKey, tc.PublicKey)
	}
	if *issuer == "" || *keyID == "" || *pubKey == "" {
		return errors.New("give --config (with residency.trust_list) or --issuer, --key-id and --public-key")
	}
	key, err := config.TrustList{PublicKey: *pubKey}.TrustListKey()
	if err != nil {
		return fmt.Errorf("--public-key: %w", err)
	}
	raw, err := readInput(*in)
	if err != nil {
		return err
	}
	tl, err := residency.VerifyTrustList(raw, *issuer, *keyID, key)
	if err == nil && tl.Expired(time.Now()) {
		err = fmt.Errorf("%w: version %d expired at %s", residency.ErrTrustList, tl.Version,
			time.UnixMilli(tl.ExpiresTS).UTC().Format(time.RFC3339))
	}
	if err != nil {
		fmt.Printf("REFUSED: %v\n", err)
		return errVerifyFailed
	}
	fmt.Printf("OK: trust list version %d by %s, issued %s", tl.Version, tl.Issuer, time.UnixMilli(tl.IssuedTS).UTC().Format(time.RFC3339))
	if tl.ExpiresTS > 0 {
		fmt.Printf(", expires %s", time.UnixMilli(tl.ExpiresTS).UTC().Format(time.RFC3339))
	}
	fmt.Printf("; %d servers\n", len(tl.Servers))
	var ignored []string
	if cfg != nil && cfg.Residency.Enabled {
		_, ignored = residency.Compile(cfg, tl)
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "SERVER\tZONE")
	servers := make([]string, 0, len(tl.Servers))
	for s := range tl.Servers {
		servers = append(servers, s)
	}
	slices.Sort(servers)
	for _, s := range servers {
		fmt.Fprintf(w, "%s\t%s\n", s, tl.Servers[s])
	}
	if err := w.Flush(); err != nil {
		return err
	}
	for _, e := range ignored {
		fmt.Printf("ignored here: %s\n", e)
	}
	return nil
}

func orConfig(flagValue, configValue string) string {
	if flagValue != "" {
		return flagValue
	}
	return configValue
}

// policyCmd is `myelin policy explain`.
func policyCmd(args []string) error {
	if len(args) == 0 || args[0] != "explain" {
		return errors.New("usage: myelin policy explain --server NAME [--room ROOM] [--json] [flags]")
	}
	fs := flag.NewFlagSet("policy explain", flag.ExitOnError)
	var f serverFlags
	f.register(fs)
	room := fs.String("room", "", "the room ID (default: the server-level data kinds)")
	server := fs.String("server", "", "the other server's name (required)")
	asJSON := fs.Bool("json", false, "print JSON")
	_ = fs.Parse(args[1:])
	if *server == "" {
		return errors.New("--server is required")
	}
	if err := config.ValidateServerName(*server); err != nil {
		return fmt.Errorf("--server: %w", err)
	}
	if *room != "" && (!strings.HasPrefix(*room, "!") || !strings.Contains(*room, ":") || len(*room) > 255) {
		return fmt.Errorf("--room must be a room ID (!opaque:server), got %q", *room)
	}
	cfg, err := f.load()
	if err != nil {
		return err
	}
	ctx := context.Background()
	db, err := f.openStore(ctx)
	if err != nil {
		return err
	}
	defer db.Close()
	tl, note, err := residency.StoredTrustList(ctx, cfg, db, time.Now())
	if err != nil {
		return err
	}
	rules, _ := residency.Compile(cfg, tl)
	e, err := residency.Explain(ctx, rules, db, *room, *server)
	if errors.Is(err, residency.ErrUnknownRoom) {
		return fmt.Errorf("room %s: this server holds nothing of it, so it cannot tell its zone (the policy refuses every server for it)", *room)
	}
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(e)
	}
	printExplanation(e, note)
	return nil
}

func printExplanation(e residency.Explanation, note string) {
	if !e.Enabled {
		fmt.Println("Policy: off (residency.enabled is false): everything may flow to every server the federation lists allow.")
	} else {
		fmt.Printf("Policy: on; our zone %s; trust list version in force: %d\n", e.OurZone, e.TrustListVersion)
	}
	if note != "" {
		fmt.Println("Trust list:", note)
	}
	zone := e.ServerZone
	if zone == "" {
		zone = "(none)"
	}
	fmt.Printf("Server %s: zone %s — %s\n", e.Server, zone, e.ServerReason)
	if e.Room != "" {
		how := "classified now from the room's state (recorded when the server next meets it)"
		if e.RoomRecorded {
			how = "recorded"
		}
		fmt.Printf("Room %s: zone %s — %s [%s; %s]\n", e.Room, e.RoomZone, e.RoomReason, e.RoomRule, how)
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "KIND\tRESULT\tRULE\tREASON")
	for _, k := range e.Kinds {
		result := "allowed"
		if !k.Allowed {
			result = "REFUSED"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", k.Kind, result, k.Rule, k.Reason)
	}
	_ = w.Flush()
}
