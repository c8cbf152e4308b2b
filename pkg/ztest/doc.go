// Package ztest is the test harness shared by zdm's packages: it tells
// unit runs from integration runs, finds the real Milvus servers started by
// the test rig (make testenv-up), gives each test a fresh source/target pair
// of databases on them, and starts an in-process JetStream.
//
// Integration tests call Integration first. Outside CI a missing server
// skips the test with the command that starts it; in CI (CI=true) it fails
// the test, so a green CI run always means the real servers were used.
package ztest
