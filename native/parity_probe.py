import numpy as np, torch, torch.nn.functional as F, time
import edgevit._native as nat
rng = np.random.default_rng(0)
def ref_xca(q,k,v,t):
    q,k,v=map(torch.from_numpy,(q,k,v)); t=torch.from_numpy(t).view(1,-1,1,1)
    a=(F.normalize(q,dim=-1)@F.normalize(k,dim=-1).transpose(-2,-1))*t
    return (a.softmax(-1)@v).numpy()
def ref_sla(q,k,v):
    q,k,v=map(torch.from_numpy,(q,k,v)); q,k=F.relu(q),F.relu(k)
    z=1.0/(q@k.sum(2,keepdim=True).transpose(-2,-1)+1e-6)
    return ((q@(k.transpose(-2,-1)@v))*z).numpy()
worst=0
for (B,H,d,N) in [(1,1,1,1),(2,3,7,13),(1,4,24,256),(3,2,5,1),(1,8,21,49),(2,1,33,17)]:
    q,k,v=(rng.standard_normal((B,H,d,N)).astype(np.float32) for _ in range(3)); t=rng.uniform(0.5,2,H).astype(np.float32)
    e1=np.abs(nat.xca(q,k,v,t)-ref_xca(q,k,v,t)).max()
    q2,k2,v2=(rng.standard_normal((B,H,N,d)).astype(np.float32) for _ in range(3))
    e2=np.abs(nat.sla(q2,k2,v2)-ref_sla(q2,k2,v2)).max()
    print((B,H,d,N), f"xca {e1:.2e} sla {e2:.2e}")
for bad in [lambda: nat.xca(np.zeros((1,2,3,4),np.float64),*[np.zeros((1,2,3,4),np.float32)]*2,np.ones(2,np.float32)),
            lambda: nat.xca(*[np.zeros((1,2,3,4),np.float32)]*3,np.ones(3,np.float32)),
            lambda: nat.sla(np.zeros((1,2,3,4),np.float32),np.zeros((1,2,3,5),np.float32),np.zeros((1,2,3,4),np.float32)),
            lambda: nat.sla(np.zeros((2,3,4),np.float32),np.zeros((2,3,4),np.float32),np.zeros((2,3,4),np.float32))]:
    try: bad(); print("no error!")
    except Exception as e: print(type(e).__name__, str(e).splitlines()[0][:100])
# speed at edgenext_small-ish shapes: XCA stage 3: B1, H4, d=40(160/4), N=16*16=256
B,H,d,N=1,4,40,256
q,k,v=(rng.standard_normal((B,H,d,N)).astype(np.float32) for _ in range(3)); t=np.ones(H,np.float32)
tq,tk,tv=map(torch.from_numpy,(q,k,v)); tt=torch.from_numpy(t).view(1,-1,1,1)
def eager(): return ((F.normalize(tq,dim=-1)@F.normalize(tk,dim=-1).transpose(-2,-1))*tt).softmax(-1)@tv
torch.set_num_threads(1)
for name,fn in [("native",lambda: nat.xca(q,k,v,t,threads=1)),("eager",eager)]*2:
    for _ in range(20): fn()
    s=time.perf_counter(); 
    for _ in range(500): fn()
    print(name, (time.perf_counter()-s)/500*1e6, "us")
