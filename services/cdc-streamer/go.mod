module github.com/zdm-io/zdm/services/cdc-streamer

go 1.26.0
