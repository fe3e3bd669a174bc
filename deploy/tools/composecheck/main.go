// composecheck loads a compose file the way Docker Compose does (compose-go: schema
// validation, interpolation, normalisation) and prints the resulting project as JSON, so
// tests can compare it with the settings the services read. Exit 1 when it does not load.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/compose-spec/compose-go/v2/cli"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: composecheck FILE")
		os.Exit(2)
	}
	options, err := cli.NewProjectOptions(
		[]string{os.Args[1]},
		cli.WithName("elevate"),
		cli.WithResolvedPaths(false),
	)
	if err == nil {
		project, loadErr := options.LoadProject(context.Background())
		if loadErr == nil {
			encoder := json.NewEncoder(os.Stdout)
			encoder.SetIndent("", "  ")
			err = encoder.Encode(project)
		} else {
			err = loadErr
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "composecheck:", err)
		os.Exit(1)
	}
}
