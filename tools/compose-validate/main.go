// compose-validate loads docker-compose files the way docker compose does (compose-go: the
// Compose Specification's JSON schema, variable interpolation, then the model's own checks such as
// depends_on naming a service) and prints the resolved model as JSON, or the first error and exit 1.
//
//	compose-validate [-env NAME=VALUE]... FILE...
//
// The environment is the process's, plus the -env pairs. Built by `make install` into .local/bin;
// tests/unit/test_compose.py runs it on docker-compose.yml.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
)

type pairs []string

func (p *pairs) String() string     { return strings.Join(*p, ",") }
func (p *pairs) Set(v string) error { *p = append(*p, v); return nil }

func main() {
	var env pairs
	flag.Var(&env, "env", "NAME=VALUE added to the environment (repeatable)")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: compose-validate [-env NAME=VALUE]... FILE...")
		os.Exit(2)
	}
	options, err := cli.NewProjectOptions(flag.Args(),
		cli.WithOsEnv,
		cli.WithEnv(env),
		cli.WithResolvedPaths(false),
	)
	if err == nil {
		var project interface{}
		project, err = options.LoadProject(context.Background())
		if err == nil {
			out := json.NewEncoder(os.Stdout)
			out.SetIndent("", "  ")
			err = out.Encode(project)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "compose-validate:", err)
		os.Exit(1)
	}
}
