package supervisor

import "fmt"

func ExampleParseListen() {
	name, addrs, err := ParseListen("grpc=127.0.0.1:20000,[::1]:20000")
	fmt.Println(name, addrs, err)
	_, _, err = ParseListen("gRPC:20000")
	fmt.Println(err)
	// Output:
	// grpc [127.0.0.1:20000 [::1]:20000] <nil>
	// "gRPC:20000": want NAME=HOST:PORT[,HOST:PORT...] with a lower-case NAME such as grpc
}
