import torch, time, sys
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM
torch.manual_seed(0); torch.set_num_threads(1)
layers, rot, lr, nq, fmt = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
V=300; S, COLOR, IS, DOT, Q, COLON = 1,2,3,4,5,6
names = torch.arange(20, 220); NV = int(sys.argv[6]) if len(sys.argv) > 6 else 12; values = torch.arange(20, 20 + NV) if NV > 12 else torch.arange(230, 242)
if NV < 0: values = torch.arange(220, 220 - NV)
cfg = GPTNeoXConfig(vocab_size=V, hidden_size=64, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=256, max_position_embeddings=256, tie_word_embeddings=False, rope_parameters={"rope_type":"default","rope_theta":10000.0,"partial_rotary_factor":rot})
m = GPTNeoXForCausalLM(cfg); opt = torch.optim.AdamW(m.parameters(), lr=lr)
def batch(B=32, n=4):
    seqs=[]; masks=[]
    for _ in range(B):
        nm = names[torch.randperm(200)[:n]]; vl = values[torch.randperm(len(values))[:n]]
        s=[]; mk=[]
        for a,b in zip(nm,vl):
            s += ([a,S,COLOR,IS,b,DOT] if fmt=='poss' else [COLOR,a,IS,b,DOT] if fmt=='of' else [a,b,DOT]); 
        mk=[0]*len(s)
        for j in torch.randperm(n)[:nq]:
            q = [Q,COLON,nm[j],S,COLOR,IS] if fmt=='poss' else [Q,COLOR,nm[j],IS] if fmt=='of' else [Q,nm[j]]
            s += q+[vl[j],DOT]; mk += [0]*len(q)+[1,0]
        seqs.append(torch.tensor([int(t) for t in s])); masks.append(torch.tensor(mk))
    return torch.stack(seqs), torch.stack(masks).bool()
t=time.time()
for step in range(1500):
    x, mk = batch()
    logits = m(input_ids=x).logits
    loss = torch.nn.functional.cross_entropy(logits[:, :-1][mk[:,1:]], x[:,1:][mk[:,1:]])
    opt.zero_grad(); loss.backward(); opt.step()
    if step % 250 == 249:
        with torch.no_grad():
            x, mk = batch(200, 4); lg = m(input_ids=x).logits[:, :-1][mk[:,1:]]
            acc = (lg.argmax(-1) == x[:,1:][mk[:,1:]]).float().mean().item()
        print(sys.argv[1:], step+1, round(loss.item(),3), round(acc,3), round(time.time()-t,1), flush=True)
