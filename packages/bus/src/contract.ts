// The RPC methods of the wire contract, one entry per proto rpc, with the
// message classes and where the method is served. This is the only table
// that maps proto methods to subjects; servers and clients both use it.

import { simdc } from "@simdc/proto";
import type { MessageType } from "./codec.js";
import type { RpcScope } from "./subjects.js";

import v1 = simdc.v1;

export interface RpcMethod<Req, Res> {
  /** Proto service, "ComputeService". */
  service: string;
  /** Proto method, "CreateVm". */
  method: string;
  /** gRPC's full method name without the leading slash, "simdc.v1.ComputeService/CreateVm". */
  rpc: string;
  scope: RpcScope;
  request: MessageType<Req>;
  response: MessageType<Res>;
}

function method<Req, Res>(
  scope: RpcScope,
  service: string,
  name: string,
  request: MessageType<Req>,
  response: MessageType<Res>,
): RpcMethod<Req, Res> {
  return { service, method: name, rpc: `simdc.v1.${service}/${name}`, scope, request, response };
}

export const hostService = {
  RegisterHost: method("api-by-id", "HostService", "RegisterHost", v1.RegisterHostRequest, v1.RegisterHostResponse),
  ProbeController: method("api-by-id", "HostService", "ProbeController", v1.ProbeControllerRequest, v1.ProbeControllerResponse),
  PacketIn: method("api-by-id", "HostService", "PacketIn", v1.PacketInRequest, v1.PacketInResponse),
  ListHosts: method("api", "HostService", "ListHosts", v1.ListHostsRequest, v1.ListHostsResponse),
  GetHost: method("api", "HostService", "GetHost", v1.GetHostRequest, v1.GetHostResponse),
  GetSyncStatus: method("api", "HostService", "GetSyncStatus", v1.GetSyncStatusRequest, v1.GetSyncStatusResponse),
};

export const controllerService = {
  GetControllerStatus: method(
    "api",
    "ControllerService",
    "GetControllerStatus",
    v1.GetControllerStatusRequest,
    v1.GetControllerStatusResponse,
  ),
};

export const computeService = {
  CreateVm: method("api", "ComputeService", "CreateVm", v1.CreateVmRequest, v1.CreateVmResponse),
  GetVm: method("api", "ComputeService", "GetVm", v1.GetVmRequest, v1.GetVmResponse),
  ListVms: method("api", "ComputeService", "ListVms", v1.ListVmsRequest, v1.ListVmsResponse),
  DeleteVm: method("api", "ComputeService", "DeleteVm", v1.DeleteVmRequest, v1.DeleteVmResponse),
  StartVm: method("api", "ComputeService", "StartVm", v1.StartVmRequest, v1.StartVmResponse),
  StopVm: method("api", "ComputeService", "StopVm", v1.StopVmRequest, v1.StopVmResponse),
  AttachNic: method("api", "ComputeService", "AttachNic", v1.AttachNicRequest, v1.AttachNicResponse),
  DetachNic: method("api", "ComputeService", "DetachNic", v1.DetachNicRequest, v1.DetachNicResponse),
  SetNicSecurityGroups: method("api", "ComputeService", "SetNicSecurityGroups", v1.SetNicSecurityGroupsRequest, v1.SetNicSecurityGroupsResponse),
  UpdateNic: method("api", "ComputeService", "UpdateNic", v1.UpdateNicRequest, v1.UpdateNicResponse),
  SetVmResources: method("api", "ComputeService", "SetVmResources", v1.SetVmResourcesRequest, v1.SetVmResourcesResponse),
};

export const storageService = {
  CreateVolume: method("api", "StorageService", "CreateVolume", v1.CreateVolumeRequest, v1.CreateVolumeResponse),
  GetVolume: method("api", "StorageService", "GetVolume", v1.GetVolumeRequest, v1.GetVolumeResponse),
  ListVolumes: method("api", "StorageService", "ListVolumes", v1.ListVolumesRequest, v1.ListVolumesResponse),
  DeleteVolume: method("api", "StorageService", "DeleteVolume", v1.DeleteVolumeRequest, v1.DeleteVolumeResponse),
  RegisterSanNode: method(
    "api-by-id",
    "StorageService",
    "RegisterSanNode",
    v1.RegisterSanNodeRequest,
    v1.RegisterSanNodeResponse,
  ),
  ListSanNodes: method("api", "StorageService", "ListSanNodes", v1.ListSanNodesRequest, v1.ListSanNodesResponse),
};

export const networkService = {
  CreateNetwork: method("api", "NetworkService", "CreateNetwork", v1.CreateNetworkRequest, v1.CreateNetworkResponse),
  GetNetwork: method("api", "NetworkService", "GetNetwork", v1.GetNetworkRequest, v1.GetNetworkResponse),
  ListNetworks: method("api", "NetworkService", "ListNetworks", v1.ListNetworksRequest, v1.ListNetworksResponse),
  DeleteNetwork: method("api", "NetworkService", "DeleteNetwork", v1.DeleteNetworkRequest, v1.DeleteNetworkResponse),
  CreateSecurityGroup: method("api", "NetworkService", "CreateSecurityGroup", v1.CreateSecurityGroupRequest, v1.CreateSecurityGroupResponse),
  GetSecurityGroup: method("api", "NetworkService", "GetSecurityGroup", v1.GetSecurityGroupRequest, v1.GetSecurityGroupResponse),
  ListSecurityGroups: method("api", "NetworkService", "ListSecurityGroups", v1.ListSecurityGroupsRequest, v1.ListSecurityGroupsResponse),
  UpdateSecurityGroup: method("api", "NetworkService", "UpdateSecurityGroup", v1.UpdateSecurityGroupRequest, v1.UpdateSecurityGroupResponse),
  DeleteSecurityGroup: method("api", "NetworkService", "DeleteSecurityGroup", v1.DeleteSecurityGroupRequest, v1.DeleteSecurityGroupResponse),
  CreateExternalEndpoint: method("api", "NetworkService", "CreateExternalEndpoint", v1.CreateExternalEndpointRequest, v1.CreateExternalEndpointResponse),
  ListExternalEndpoints: method("api", "NetworkService", "ListExternalEndpoints", v1.ListExternalEndpointsRequest, v1.ListExternalEndpointsResponse),
  DeleteExternalEndpoint: method("api", "NetworkService", "DeleteExternalEndpoint", v1.DeleteExternalEndpointRequest, v1.DeleteExternalEndpointResponse),
  CreateRouter: method("api", "NetworkService", "CreateRouter", v1.CreateRouterRequest, v1.CreateRouterResponse),
  ListRouters: method("api", "NetworkService", "ListRouters", v1.ListRoutersRequest, v1.ListRoutersResponse),
  DeleteRouter: method("api", "NetworkService", "DeleteRouter", v1.DeleteRouterRequest, v1.DeleteRouterResponse),
};

export const hostAgentService = {
  GetHostState: method("host", "HostAgentService", "GetHostState", v1.GetHostStateRequest, v1.GetHostStateResponse),
  Reregister: method("host", "HostAgentService", "Reregister", v1.ReregisterRequest, v1.ReregisterResponse),
  StartStrayVm: method("host", "HostAgentService", "StartStrayVm", v1.StartStrayVmRequest, v1.StartStrayVmResponse),
  DumpFlows: method("host", "HostAgentService", "DumpFlows", v1.DumpFlowsRequest, v1.DumpFlowsResponse),
  DumpPorts: method("host", "HostAgentService", "DumpPorts", v1.DumpPortsRequest, v1.DumpPortsResponse),
  DumpConntrack: method("host", "HostAgentService", "DumpConntrack", v1.DumpConntrackRequest, v1.DumpConntrackResponse),
  SetNic: method("host", "HostAgentService", "SetNic", v1.SetNicRequest, v1.SetNicResponse),
  ModFlows: method("host", "HostAgentService", "ModFlows", v1.ModFlowsRequest, v1.ModFlowsResponse),
  Ping: method("host", "HostAgentService", "Ping", v1.PingRequest, v1.PingResponse),
  StartTraffic: method("host", "HostAgentService", "StartTraffic", v1.StartTrafficRequest, v1.StartTrafficResponse),
  StopTraffic: method("host", "HostAgentService", "StopTraffic", v1.StopTrafficRequest, v1.StopTrafficResponse),
  TrafficStats: method("host", "HostAgentService", "TrafficStats", v1.TrafficStatsRequest, v1.TrafficStatsResponse),
  Trace: method("host", "HostAgentService", "Trace", v1.TraceRequest, v1.TraceResponse),
  GetHostStats: method("host", "HostAgentService", "GetHostStats", v1.GetHostStatsRequest, v1.GetHostStatsResponse),
  SetMemoryPressure: method("host", "HostAgentService", "SetMemoryPressure", v1.SetMemoryPressureRequest, v1.SetMemoryPressureResponse),
};

export const sanNodeService = {
  CreateBackingVolume: method(
    "san",
    "SanNodeService",
    "CreateBackingVolume",
    v1.CreateBackingVolumeRequest,
    v1.CreateBackingVolumeResponse,
  ),
  DeleteBackingVolume: method(
    "san",
    "SanNodeService",
    "DeleteBackingVolume",
    v1.DeleteBackingVolumeRequest,
    v1.DeleteBackingVolumeResponse,
  ),
  ReadBlocks: method("san", "SanNodeService", "ReadBlocks", v1.ReadBlocksRequest, v1.ReadBlocksResponse),
  WriteBlocks: method("san", "SanNodeService", "WriteBlocks", v1.WriteBlocksRequest, v1.WriteBlocksResponse),
  ListBackingVolumes: method(
    "san",
    "SanNodeService",
    "ListBackingVolumes",
    v1.ListBackingVolumesRequest,
    v1.ListBackingVolumesResponse,
  ),
  Reregister: method(
    "san",
    "SanNodeService",
    "Reregister",
    v1.SanNodeServiceReregisterRequest,
    v1.SanNodeServiceReregisterResponse,
  ),
};

export const supervisorService = {
  ListProcesses: method("ctl", "SupervisorService", "ListProcesses", v1.ListProcessesRequest, v1.ListProcessesResponse),
  SignalProcess: method("ctl", "SupervisorService", "SignalProcess", v1.SignalProcessRequest, v1.SignalProcessResponse),
};
